"""The asyncio shell around the sans-I/O core (websockets lays out its ``asyncio/`` the same way).

The connection moves bytes between one transport and the session and runs its one timer; the
supervisor is the only holder of the current link; subscriptions own their queues and workers;
the dispatcher only routes. Nothing here decides what the protocol means: that is ``_core``.
"""
