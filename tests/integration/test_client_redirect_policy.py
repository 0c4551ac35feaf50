"""Issue 19 §2: a server redirection never takes the credentials to a host the user did not
list. Fake brokers (tests/support/redirect.py, speaking MQTT 5 through the ``mqtt5`` codec)
record every CONNECT they receive: the unlisted one must receive none."""

from __future__ import annotations

import asyncio

import pytest

from support.mosquitto_cli import unique, wait_until
from support.redirect import RedirectBroker
from tars.mqtt import ConnectError, MQTTClient


def host_port(server: RedirectBroker) -> str:
    return f"127.0.0.1:{server.port}"


def with_credentials(server: RedirectBroker, user: str, password: str) -> str:
    return f"mqtt://{user}:{password}@127.0.0.1:{server.port}"


async def test_a_connack_redirect_to_an_unlisted_host_is_refused_and_nothing_leaves(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with RedirectBroker.refusing("elsewhere") as unlisted:
        async with RedirectBroker.refusing(host_port(unlisted)) as listed:
            url = with_credentials(listed, "alice", "s3cret-pw")
            client = MQTTClient(url, unique("harvest"), wait_for_broker=False)
            with pytest.raises(ConnectError, match="0x9d"):
                await asyncio.wait_for(client.connect(), timeout=10)
            assert client.stats.redirects_refused == 1
        assert unlisted.connects == []  # no CONNECT: no user name, no password
        assert [c.username for c in listed.connects] == ["alice"]
    refusals = [r for r in caplog.records if "does not list" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelname == "WARNING"
    assert host_port(unlisted) in refusals[0].getMessage()  # the reference, as the broker sent it
    assert "s3cret-pw" not in caplog.text


async def test_a_disconnect_redirect_to_an_unlisted_host_is_refused_too() -> None:
    async with RedirectBroker.refusing("elsewhere") as unlisted:
        async with RedirectBroker.accepting_then_disconnecting(
            f"mqtt://{host_port(unlisted)}", delay=0.1
        ) as listed:
            url = with_credentials(listed, "alice", "s3cret-pw")
            async with MQTTClient(url, unique("stay"), reconnect_min_delay=0.05) as client:
                await wait_until(lambda: client.stats.redirects_refused >= 2, timeout=10)
                assert client.broker.endswith(host_port(listed))  # it stayed where it was sent
            assert len(listed.connects) >= 2  # back to the broker it was given instead
        assert unlisted.connects == []


async def test_a_listed_target_gets_its_own_credentials_not_the_redirecting_brokers() -> None:
    async with RedirectBroker.refusing("elsewhere") as target:
        async with RedirectBroker.refusing(host_port(target)) as first:
            urls = ",".join(
                (with_credentials(first, "alice", "pw-a"), with_credentials(target, "bob", "pw-b"))
            )
            client = MQTTClient(urls, unique("listed"), wait_for_broker=False)
            with pytest.raises(ConnectError):
                await asyncio.wait_for(client.connect(), timeout=10)
        # Followed (the target is listed), with the target's URL's credentials.
        assert target.connects
        assert {(c.username, c.password) for c in target.connects} == {("bob", b"pw-b")}
        assert {c.username for c in first.connects} == {"alice"}


async def test_redirects_any_follows_to_any_host_with_the_current_credentials() -> None:
    async with RedirectBroker.refusing("elsewhere") as unlisted:
        async with RedirectBroker.refusing(host_port(unlisted)) as listed:
            url = with_credentials(listed, "alice", "pw-a")
            client = MQTTClient(url, unique("any"), wait_for_broker=False, redirects="any")
            with pytest.raises(ConnectError):
                await asyncio.wait_for(client.connect(), timeout=10)
        assert [c.username for c in unlisted.connects][:1] == ["alice"]  # as the user allowed


async def test_redirects_never_follows_not_even_a_listed_host() -> None:
    async with RedirectBroker.refusing("elsewhere") as target:
        async with RedirectBroker.refusing(host_port(target)) as first:
            urls = f"{first.url},{target.url}"
            client = MQTTClient(urls, unique("never"), wait_for_broker=False, redirects="never")
            with pytest.raises(ConnectError):
                await asyncio.wait_for(client.connect(), timeout=10)
            assert client.stats.redirects_refused >= 1
        # Reached as the next broker of the list, not by the redirection: once per attempt.
        assert len(target.connects) <= 1


def test_the_policy_comes_from_the_environment_too() -> None:
    env = {"MQTT_URL": "mqtt://h", "MQTT_CLIENT_ID": "c", "MQTT_REDIRECTS": "never"}
    assert MQTTClient.from_env(env).config.redirects == "never"
