"""The fleet tracker and its table: fed messages and a clock by hand, no broker, no sleeps."""

from __future__ import annotations

import time

import orjson

from tars.mqtt._cli._fleet_view import FleetView, render_table
from tars.mqtt._cli._render import Style
from tars.mqtt._health import encode_health, encode_heartbeat, will_payload


def up_since(ts: float) -> str:
    """An offline will's timestamp is when its link was opened, shown as "link up since"."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


def stamped(payload: bytes, ts: float) -> bytes:
    """A status as the client writes it, with its envelope ``ts`` (and ``timestamp``) at ``ts``:
    the fleet ages statuses by their own time."""
    envelope = orjson.loads(payload)
    envelope["ts"] = envelope["data"]["timestamp"] = ts
    return orjson.dumps(envelope)


def health(ok: bool, event: str | None = None, error: str | None = None, ts: float = 0.0) -> bytes:
    return stamped(encode_health(ok, event, error, source="svc", timestamp=ts)[1], ts)


def will(source: str, ts: float = 0.0) -> bytes:
    return stamped(will_payload(source=source, timestamp=ts), ts)


def fleet(**options: object) -> FleetView:
    view = FleetView(stale_after=10.0, **options)  # type: ignore[arg-type]
    view.feed("system/health/speech", health(True, "ready", ts=0.0), now=0.0)
    view.feed("system/keepalive/speech", encode_heartbeat(1.0), now=1.0)
    view.feed("system/health/billing", health(False, "degraded", "disk full", ts=2.0), now=2.0)
    view.feed("system/health/planner", will("planner", ts=3.0), now=3.0)
    view.feed("system/keepalive/vision", encode_heartbeat(1.0), now=1.0)
    return view


def test_the_table_a_person_reads() -> None:
    assert render_table(fleet(), now=5.0) == (
        "SERVICE  STATE      EVENT     HEARTBEAT  STATUS  ERROR\n"
        "billing  unhealthy  degraded  -          3.0s    disk full\n"
        "planner  offline    offline   -          2.0s    connection lost unexpectedly"
        f" (link up since {up_since(3.0)})\n"
        "speech   ok         ready     4.0s       5.0s    -\n"
        "vision   unknown    -         4.0s       -       -\n"
        "4 services, 3 not ok"
    )


def test_a_service_whose_heartbeats_stopped_is_stale() -> None:
    view = fleet()
    speech = view.rows[("", "speech")]
    assert view.state(speech, now=11.0) == "ok"
    assert view.state(speech, now=11.5) == "stale"
    assert "speech   stale" in render_table(view, now=11.5)


def test_a_service_never_heard_heartbeating_is_stale_only_when_heartbeats_are_expected() -> None:
    lax, strict = FleetView(stale_after=5.0), FleetView(stale_after=5.0, expect_heartbeats=True)
    for view in (lax, strict):
        view.feed("system/health/quiet", health(True, "ready"), now=0.0)
    assert lax.state(lax.rows[("", "quiet")], now=60.0) == "ok"
    assert strict.state(strict.rows[("", "quiet")], now=4.9) == "ok"  # not listened long enough
    assert strict.state(strict.rows[("", "quiet")], now=5.0) == "stale"


def test_check_fails_on_every_state_but_ok() -> None:
    view = fleet()
    assert [row.service for row in view.in_trouble(now=5.0)] == ["billing", "planner", "vision"]
    healthy = FleetView(stale_after=10.0)
    healthy.feed("system/health/speech", health(True), now=0.0)
    assert healthy.in_trouble(now=5.0) == []


def test_a_new_status_replaces_the_old_one_and_an_empty_one_removes_the_service() -> None:
    view = fleet()
    view.feed("system/health/billing", health(True, "recovered"), now=6.0)
    assert view.state(view.rows[("", "billing")], now=6.0) == "ok"
    assert view.rows[("", "billing")].error is None
    view.feed("system/health/billing", b"", now=7.0)  # retained status cleared
    assert ("", "billing") not in view.rows


def test_garbage_on_the_system_topics_is_counted_not_fatal() -> None:
    view = FleetView(stale_after=10.0)
    assert not view.feed("system/health/x", b"\xff", now=0.0)
    assert not view.feed("system/health/x", orjson.dumps({"data": {"ok": "yes"}}), now=0.0)
    assert not view.feed("system/health/a/b", health(True), now=0.0)
    assert not view.feed("elsewhere/x", health(True), now=0.0)
    assert view.ignored == 4
    assert render_table(view, now=0.0).endswith(
        "no service seen yet on system/health/+ or system/keepalive/+"
    )


def test_the_broker_column_appears_with_more_than_one_broker() -> None:
    view = FleetView(stale_after=10.0)
    view.feed("system/health/speech", health(True, "ready"), now=0.0, broker="pi-a:1883")
    view.feed("system/health/speech", health(True, "ready"), now=0.0, broker="pi-b:1883")
    lines = render_table(view, now=1.0).splitlines()
    assert lines[0].split() == [
        "SERVICE", "STATE", "EVENT", "HEARTBEAT", "STATUS", "ERROR", "BROKER",
    ]  # fmt: skip
    assert lines[1].split()[-1] == "pi-a:1883"
    assert lines[2].split()[-1] == "pi-b:1883"


def test_service_names_and_errors_cannot_drive_the_terminal() -> None:
    view = FleetView(stale_after=10.0)
    view.feed("system/health/evil\x1b[2J", health(False, "x", "line1\nline2\x1b[31m"), now=0.0)
    table = render_table(view, now=0.0)
    assert "\x1b" not in table
    assert "line1 line2" in table


def test_colour_marks_the_state() -> None:
    table = render_table(fleet(), now=5.0, style=Style(color=True))
    assert "\x1b[32mok\x1b[0m" in table
    assert "\x1b[31mofflin" in table


def status(source: str, ok: bool = True, event: str = "ready", ts: float = 0.0) -> bytes:
    return stamped(encode_health(ok, event, None, source=source, timestamp=ts)[1], ts)


def test_instances_of_a_replicated_service_get_an_instance_column() -> None:
    """``instance="a"`` makes client id ``stt-a`` whose statuses still come from ``stt``."""
    view = FleetView(stale_after=10.0)
    view.feed("system/health/stt-b", status("stt"), now=0.0)
    view.feed("system/health/stt-a", status("stt"), now=0.0)
    view.feed("system/health/stt-c", will("stt", ts=1.0), now=1.0)
    view.feed("system/health/speech", status("speech"), now=0.0)
    # Not instances: an id that merely starts like another service, a source with no suffix.
    view.feed("system/health/sttx", status("stt"), now=0.0)
    view.feed("system/health/stt-", status("stt"), now=0.0)
    assert render_table(view, now=2.0) == (
        "SERVICE  INSTANCE  STATE    EVENT    HEARTBEAT  STATUS  ERROR\n"
        "speech   -         ok       ready    -          2.0s    -\n"
        "stt      a         ok       ready    -          2.0s    -\n"
        "stt      b         ok       ready    -          2.0s    -\n"
        "stt      c         offline  offline  -          1.0s    connection lost unexpectedly"
        f" (link up since {up_since(1.0)})\n"
        "stt-     -         ok       ready    -          2.0s    -\n"
        "sttx     -         ok       ready    -          2.0s    -\n"
        "4 services (3 instances), 1 not ok"
    )
    [trouble] = view.in_trouble(now=2.0)
    assert (trouble.name, trouble.instance, trouble.service) == ("stt", "c", "stt-c")


def test_an_instance_heard_only_heartbeating_shows_its_client_id_until_a_status_names_it() -> None:
    view = FleetView(stale_after=10.0)
    view.feed("system/keepalive/stt-a", encode_heartbeat(0.0), now=0.0)
    assert view.sorted_rows()[0].name == "stt-a"
    view.feed("system/health/stt-a", status("stt"), now=1.0)
    assert (view.sorted_rows()[0].name, view.sorted_rows()[0].instance) == ("stt", "a")


def test_colour_marks_the_state_with_the_instance_column_too() -> None:
    view = FleetView(stale_after=10.0)
    view.feed("system/health/stt-a", status("stt", ok=False, event="degraded"), now=0.0)
    lines = render_table(view, now=1.0, style=Style(color=True)).splitlines()
    assert "stt      a         \x1b[31munhealthy\x1b[0m  degraded" in lines[1]


def test_a_retained_status_is_aged_by_its_own_timestamp_not_by_its_arrival() -> None:
    """The broker hands over an hours-old retained status at once: it must read hours old."""
    view = FleetView(stale_after=10.0)
    view.feed("system/health/old", health(True, "ready", ts=1000.0), now=1000.0 + 7300)
    view.feed("system/health/skewed", health(True, "ready", ts=9000.0), now=8000.0)  # clock ahead
    table = render_table(view, now=8300.0)
    assert "old      ok     ready  -          2h01m   -" in table
    assert "skewed   ok     ready  -          5m00s   -" in table  # never younger than arrival


def test_a_graceful_shutdown_is_stopped_and_does_not_fail_the_check() -> None:
    view = FleetView(stale_after=10.0)
    view.feed("system/health/tts", health(False, "shutdown", ts=1.0), now=1.0)
    [row] = view.sorted_rows()
    assert view.state(row, now=2.0) == "stopped"
    assert view.in_trouble(now=2.0) == []
    assert render_table(view, now=2.0).splitlines()[-1] == "1 service, 0 not ok, 1 stopped"


def test_named_services_filter_the_view_and_one_never_heard_is_missing() -> None:
    view = fleet(only=("speech", "ghost"), started=0.0)
    assert [row.service for row in view.sorted_rows()] == ["ghost", "speech"]
    ghost = view.sorted_rows()[0]
    assert view.state(ghost, now=5.0) == "missing"
    assert not view.decided(ghost, now=5.0)  # it may still speak up
    assert view.decided(ghost, now=10.0)
    assert [row.service for row in view.in_trouble(now=10.0)] == ["ghost"]


def test_check_decides_early_except_on_a_silence_it_must_wait_out() -> None:
    view = FleetView(stale_after=10.0, expect_heartbeats=True, started=0.0)
    view.feed("system/health/dead", will("dead"), now=0.5)
    view.feed("system/health/up", health(True, "ready"), now=0.5)
    assert view.decided(view.rows[("", "dead")], now=0.5)  # its will says it all
    assert not view.all_decided(now=0.5)  # "up" has not been heard heartbeating yet
    view.feed("system/keepalive/up", encode_heartbeat(1.0), now=1.0)
    assert view.all_decided(now=1.0)
    view.feed("system/health/quiet", health(True, "ready"), now=1.0)
    assert not view.all_decided(now=9.9)
    assert view.all_decided(now=10.0)
    assert view.state(view.rows[("", "quiet")], now=10.0) == "stale"
