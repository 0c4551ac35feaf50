"""The sans-I/O core: everything that survives a link, with no asyncio, socket or ssl.

The session and its parts take bytes, calls and ``now`` and return bytes to send, events and
the next deadline (h11's shape). ``tests/packaging/test_layers.py`` keeps this package free of
I/O imports; the asyncio shell that drives it lives in ``tars.mqtt._asyncio``.
"""
