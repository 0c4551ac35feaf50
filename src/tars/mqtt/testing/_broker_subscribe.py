"""SUBSCRIBE and UNSUBSCRIBE applied to the router: reason codes and retained deliveries. Pure.

Kept apart from the packet dispatch so the per-filter rules (MQTT 5, 3.8.4 and 3.10.4) read in
one place: each filter gets its own reason code, a filter the broker was told to refuse gets the
refusal, and a new (or, with retain handling 0, any) non-shared subscription receives the
retained messages it matches, with the retain flag set, at most at its granted QoS.
"""

from __future__ import annotations

import mqtt5

from .._errors import InvalidTopicError
from .._topics import split_shared, validate_topic_filter
from ._broker_faults import Faults
from ._broker_router import Router
from ._broker_session import BrokerSubscription, Delivery

__all__ = ["shared_no_local", "subscribe", "unsubscribe"]


def shared_no_local(packet: mqtt5.SubscribePacket) -> bool:
    """Whether a filter asks for no-local on a shared subscription (a protocol error)."""
    for requested in packet.topic_filters:
        if requested.no_local:
            try:
                if split_shared(requested.pattern)[0] is not None:
                    return True
            except InvalidTopicError:
                continue  # answered as an invalid filter
    return False


def subscribe(
    router: Router, faults: Faults, client_id: str, packet: mqtt5.SubscribePacket, now: float
) -> tuple[list[mqtt5.SubAckReasonCode], list[Delivery]]:
    """Apply a SUBSCRIBE: the SUBACK reason codes, and the retained messages to send after it."""
    codes: list[mqtt5.SubAckReasonCode] = []
    retained: list[Delivery] = []
    ids = () if packet.subscription_id is None else (packet.subscription_id,)
    for requested in packet.topic_filters:
        pattern = requested.pattern
        try:
            validate_topic_filter(pattern)
            group, inner = split_shared(pattern)
        except InvalidTopicError:
            codes.append(mqtt5.SubAckReasonCode.TOPIC_FILTER_INVALID)
            continue
        refusal = faults.refusal_for(pattern)
        if refusal is not None:
            codes.append(mqtt5.SubAckReasonCode(refusal))
            continue
        existed = router.has(client_id, pattern)
        qos = int(requested.max_qos)
        handling = int(requested.retain_handling)
        router.add(
            client_id,
            BrokerSubscription(
                topic_filter=pattern,
                qos=qos,
                no_local=requested.no_local,
                retain_as_published=requested.retain_as_published,
                retain_handling=handling,
                subscription_id=packet.subscription_id,
            ),
        )
        codes.append(mqtt5.SubAckReasonCode(qos))
        if group is None and (handling == 0 or (handling == 1 and not existed)):
            retained.extend(
                Delivery(message, min(message.qos, qos), True, ids)
                for message in router.retained_matching(inner, now)
            )
    return codes, retained


def unsubscribe(
    router: Router, client_id: str, patterns: list[str]
) -> list[mqtt5.UnsubAckReasonCode]:
    """Apply an UNSUBSCRIBE: one UNSUBACK reason code per filter."""
    codes: list[mqtt5.UnsubAckReasonCode] = []
    for pattern in patterns:
        try:
            validate_topic_filter(pattern)
        except InvalidTopicError:
            codes.append(mqtt5.UnsubAckReasonCode.TOPIC_FILTER_INVALID)
            continue
        if router.remove(client_id, pattern):
            codes.append(mqtt5.UnsubAckReasonCode.SUCCESS)
        else:
            codes.append(mqtt5.UnsubAckReasonCode.NO_SUBSCRIPTION_EXISTED)
    return codes
