"""The test broker's WebSocket listener: MQTT over WebSockets, as a ``ws://`` client sees it.

Each accepted TCP (or TLS) connection gets a :class:`ServerLink`, the server side of the
client's :class:`~tars.mqtt._asyncio.websocket.WebSocketLink`: it answers the upgrade (the
``mqtt`` subprotocol, MQTT 5 section 6; 404 for another path, as a proxy without that route
would), then hands the broker's :class:`~._broker_link.BrokerLink` a transport that carries
MQTT bytes in binary frames. The broker itself does not know the difference.

Imported only by :meth:`InMemoryBroker.serve_ws`: it needs the ``ws`` extra (websockets).
"""

from __future__ import annotations

import asyncio
import http
import logging
from typing import Final

from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from .._asyncio.websocket import SUBPROTOCOL, WebSocketLink, quiet_logger

__all__ = ["ServerLink"]

_LOG: Final = quiet_logger("tars.mqtt.testing.broker.ws")


class ServerLink(WebSocketLink):
    """One WebSocket client of the test broker; ``inner`` is its :class:`BrokerLink`."""

    _log = logging.getLogger("tars.mqtt.testing.broker.ws")

    def __init__(self, inner: asyncio.Protocol, path: str) -> None:
        ws = ServerProtocol(subprotocols=[SUBPROTOCOL], max_size=None, logger=_LOG)
        super().__init__(ws, inner)
        self._server = ws
        self._path = path

    def _handshake(self, event: Request | Response) -> None:
        assert isinstance(event, Request)
        if event.path.partition("?")[0] != self._path:
            response = self._server.reject(
                http.HTTPStatus.NOT_FOUND, f"no MQTT endpoint here: it is at {self._path}\n"
            )
        else:
            response = self._server.accept(event)
        self._server.send_response(response)
        if response.status_code == 101:
            self._upgraded()
        else:
            self._send()
            self._closing = True
            if self._transport is not None:
                self._transport.close()
