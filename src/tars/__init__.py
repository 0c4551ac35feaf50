"""tars-core: shared building blocks of the TARS fleet. The MQTT client lives in :mod:`tars.mqtt`."""
