"""tars-core: shared building blocks of the TARS fleet; the MQTT client is :mod:`tars.mqtt`."""
