"""The asyncio boundary of the core: the session's events become future results, and transport
exceptions become the library's own, each in one place.

Handles are the futures the caller awaits (a publish's ack, a SUBACK, a waiter); the session
gives them back in its events whatever link they finished on, so :func:`settle` serves the
connection and the client alike (the client settles what a call to the session ended at once,
such as an outbox drop). :func:`map_exceptions` is the one idiom for errors on the way in (as
httpcore's ``map_exceptions``), instead of an ``except`` arm per call site.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from .._core.events import (
    Event,
    FilterGivenUp,
    PublishDone,
    RequestAborted,
    Settled,
    Subscribed,
    Unsubscribed,
)
from .._errors import ConnectError, ConnectionLostError, MQTTError, PublishError
from .._tls import is_certificate_failure
from .._trouble import MQTT311_HINT

__all__ = ["map_exceptions", "settle"]

_TLS_HINT: Final = (
    " (a certificate was not trusted: check tls_ca_file against the broker's certificate and "
    "the host name in the URL, or tls_cert_file/tls_key_file if the broker asks for ours)"
)


def settle(events: Iterable[Event]) -> None:
    """Resolve the futures the session's events carry as handles (publishes, requests,
    waiters). Link-level events (connected, ready, disconnected, messages) are ignored here."""
    for event in events:
        kind = type(event)
        if kind is PublishDone:
            assert isinstance(event, PublishDone)
            fut = event.handle
            if isinstance(fut, asyncio.Future) and not fut.done():
                if event.error is not None:
                    fut.set_exception(event.error)
                elif event.reason_code >= 0x80:
                    fut.set_exception(
                        PublishError(
                            f"broker refused the publish: reason code {event.reason_code:#x}"
                            + (f" ({event.reason_string})" if event.reason_string else ""),
                            event.reason_code,
                        )
                    )
                else:
                    fut.set_result(event.reason_code)
        elif kind is Settled:
            assert isinstance(event, Settled)
            _resolve(event.handle, None)
        elif kind is Subscribed or kind is Unsubscribed:
            assert isinstance(event, Subscribed | Unsubscribed)
            _resolve(event.handle, event.reason_codes)
        elif kind is FilterGivenUp:
            assert isinstance(event, FilterGivenUp)
            for fut in event.handles:  # subscribe() calls awaiting the SUBACK of that filter
                if isinstance(fut, asyncio.Future) and not fut.done():
                    fut.set_exception(event.error)
        elif kind is RequestAborted:
            assert isinstance(event, RequestAborted)
            fut = event.handle
            if isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_exception(ConnectionLostError("link lost before the broker answered"))


def _resolve(handle: object, value: Any) -> None:
    if isinstance(handle, asyncio.Future) and not handle.done():
        handle.set_result(value)


@contextlib.contextmanager
def map_exceptions(
    where: str, timeout: float, tcp_up: Callable[[], bool] | None = None
) -> Iterator[None]:
    """The one place transport errors become :class:`~tars.mqtt.ConnectError` (``refused``
    when nothing listens), with the original as ``__cause__``. ``tcp_up`` tells, on a timeout,
    whether the connection itself was made (then the broker never answered our CONNECT)."""
    try:
        yield
    except MQTTError:
        raise
    except TimeoutError:
        hint = MQTT311_HINT if tcp_up is not None and tcp_up() else ""
        raise ConnectError(f"no CONNACK from {where} within {timeout:g} s{hint}") from None
    except ConnectionRefusedError as exc:
        raise ConnectError(f"connection to {where} refused", refused=True) from exc
    except (OSError, ssl.SSLError) as exc:
        # A certificate the client does not trust, or ours refused by the broker: the same
        # certificate again cannot help, so no retry (issue 12, D4).
        fatal = is_certificate_failure(exc)
        hint = _TLS_HINT if fatal else ""
        raise ConnectError(f"cannot connect to {where}: {exc}{hint}", fatal=fatal) from exc
    except Exception as exc:
        # OSError and ssl.SSLError, and anything else the resolver or a connector raises (an
        # IDNA UnicodeError for a host label over 63 characters...): still a failed attempt.
        raise ConnectError(f"cannot connect to {where}: {exc}") from exc
