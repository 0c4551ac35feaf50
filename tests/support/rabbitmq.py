"""A real RabbitMQ cluster on 127.0.0.1: MQTT 3.1.1 over TCP and WebSockets, for failover tests.

RabbitMQ is the second real broker cluster of the suite (issue 22; the first is ejabberd,
``tests/support/ejabberd.py``): MQTT 3.1.1 only (its ``rabbitmq_mqtt`` plugin), WebSockets
through ``rabbitmq_web_mqtt``, and MQTT sessions kept in AMQP queues. Debian's package (3.10) is
one ``apt-get install`` away.

:class:`RabbitMQCluster` starts N nodes, each in its own directory (``rabbitmq.conf``, enabled
plugins file, mnesia base, logs, a ``HOME`` with the cluster's own Erlang cookie), each with its
own AMQP, MQTT, WebSocket and distribution port and node name, and an ``epmd`` of the cluster's
own on a free port. Everything listens on 127.0.0.1 only; port 1883 is never used. Nothing goes
through ``/usr/sbin/rabbitmq-server`` or the system service (as root they switch to the
``rabbitmq`` user and the system's cookie and directories): the node is Debian's
``/usr/lib/rabbitmq/bin/rabbitmq-server`` with ``RABBITMQ_ALLOW_INPUT`` set, which makes the
script ``exec`` the emulator (the PID we hold is the ``beam.smp`` itself, so ``kill -9`` is a
real node death), with ``-noinput`` given back through ``RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS``.
Nodes 2..N join node 1 with ``rabbitmqctl stop_app``, ``join_cluster``, ``start_app``. Every
process is stopped by its PID; the system's ``epmd`` (port 4369) is never touched.

What RabbitMQ 3.10.8 does, measured here (loaded 2-core machine): a node boots in 5-10 s, the
three in parallel and the two joins in about 20-30 s (``start_seconds``, ``join_seconds``); a
node killed with ``kill -9`` and started again on the same data directory rejoins by itself.
It answers an MQTT 5 CONNECT with 3.1.1's return code 1 (unacceptable protocol level), so
``protocol="auto"`` falls back; a session that is not clean (``clean session = 0``) is a queue
``mqtt-subscription-<client id>qos1``, classic by default (it lives on the node it was declared
on) or a quorum queue (replicated on the cluster) with ``durable_queue_type="quorum"``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import time
from pathlib import Path

from tars.mqtt.testing._process import BrokerProcess, BrokerRunner, ProcessExited, free_port

__all__ = ["INSTALL_HINT", "RabbitMQCluster", "RabbitMQNode", "rabbitmq_available"]

INSTALL_HINT = "apt-get install -y --no-install-recommends rabbitmq-server"
_BIN = Path("/usr/lib/rabbitmq/bin")
_SERVER = _BIN / "rabbitmq-server"
_CTL = _BIN / "rabbitmqctl"
_EPMD = "/usr/bin/epmd"
# One scheduler per node and no busy-waiting: three nodes share a 2-core CI machine with the
# tests (the script's own defaults bind schedulers and size for production).
_VM_FLAGS = "+S 1:1 +sbwt none +sbwtdcpu none +sbwtdio none"
_PLUGINS = "[rabbitmq_mqtt,rabbitmq_web_mqtt]."
_READY = "Server startup complete"


def rabbitmq_available() -> bool:
    """True when Debian's rabbitmq-server package (and epmd) is installed."""
    return all(os.access(p, os.X_OK) for p in (_SERVER, _CTL, Path(_EPMD)))


class RabbitMQNode:
    """One node of a :class:`RabbitMQCluster`; ports and name stay the same across restarts."""

    def __init__(self, cluster: RabbitMQCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"tars{index + 1}-{cluster.token}@localhost"
        host = cluster.host
        self.amqp_port = free_port(host)
        self.mqtt_port = free_port(host)
        self.ws_port = free_port(host)  # rabbitmq_web_mqtt (cowboy), at /ws
        self.dist_port = free_port(host)
        self.dir = cluster.workdir / f"node{index + 1}"
        self.dir.mkdir(parents=True)
        cookie = self.dir / ".erlang.cookie"  # HOME is self.dir: the server and ctl read it
        cookie.write_text(cluster.cookie, encoding="ascii")
        cookie.chmod(0o400)
        self.process = BrokerProcess(self.name, self.dir / "console.log")

    @property
    def url(self) -> str:
        """``mqtt://user:password@127.0.0.1:port`` of this node's MQTT listener."""
        c = self.cluster
        return f"mqtt://{c.username}:{c.password}@{c.host}:{self.mqtt_port}"

    @property
    def ws_url(self) -> str:
        """``ws://user:password@127.0.0.1:port/ws``: the same broker over WebSockets."""
        c = self.cluster
        return f"ws://{c.username}:{c.password}@{c.host}:{self.ws_port}/ws"

    @property
    def redacted_url(self) -> str:
        """:attr:`url` with the password masked, as a client's ``broker`` property shows it."""
        c = self.cluster
        return f"mqtt://{c.username}:***@{c.host}:{self.mqtt_port}"

    @property
    def redacted_ws_url(self) -> str:
        c = self.cluster
        return f"ws://{c.username}:***@{c.host}:{self.ws_port}/ws"

    @property
    def pid(self) -> int | None:
        """The PID of the node's ``beam.smp``, or None when it is not running."""
        return self.process.pid

    @property
    def is_running(self) -> bool:
        return self.process.is_running

    @property
    def log_path(self) -> Path:
        """The node's console (RabbitMQ logs to stdout here: ``RABBITMQ_LOGS=-``)."""
        return self.process.log_path

    def config_text(self) -> str:
        c = self.cluster
        return "\n".join(
            [
                "# Written by tests/support/rabbitmq.py: a throwaway cluster node for tests.",
                f"listeners.tcp.default = {c.host}:{self.amqp_port}",
                "loopback_users = none",
                f"default_user = {c.username}",
                f"default_pass = {c.password}",
                f"cluster_name = tars-{c.token}",
                "log.console = true",
                "log.console.level = info",
                "log.file = false",
                f"mqtt.listeners.tcp.default = {c.host}:{self.mqtt_port}",
                "mqtt.allow_anonymous = false",
                f"mqtt.durable_queue_type = {c.durable_queue_type}",
                f"web_mqtt.tcp.ip = {c.host}",
                f"web_mqtt.tcp.port = {self.ws_port}",
                # Memory and disk alarms would block publishers on a busy CI machine.
                "vm_memory_high_watermark.absolute = 1GB",
                "disk_free_limit.absolute = 1MB",
                c.extra_config,
                "",
            ]
        )

    def _env(self) -> dict[str, str]:
        c = self.cluster
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ERL_", "RABBITMQ_", "NOTIFY_SOCKET"))
        }
        env.update(
            HOME=str(self.dir),  # the cookie file; never the user's ~/.erlang.cookie
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS=c.host,
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONF_ENV_FILE=str(c.env_file),  # not /etc/rabbitmq/rabbitmq-env.conf
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.dir / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(c.plugins_file),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_LOGS="-",
            RABBITMQ_PID_FILE=str(self.dir / "pid"),
            RABBITMQ_ALLOW_INPUT="true",  # the script execs the emulator: we hold its PID
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                f"-noinput {_VM_FLAGS} -start_epmd false "
                "-kernel inet_dist_use_interface {127,0,0,1}"
            ),
            RABBITMQ_CTL_DIST_PORT_MIN=str(c.ctl_port),
            RABBITMQ_CTL_DIST_PORT_MAX=str(c.ctl_port),
            RABBITMQ_CTL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}",
            ERL_INETRC=str(c.inetrc),
            ERL_EPMD_ADDRESS=c.host,
            ERL_EPMD_PORT=str(c.epmd_port),
            ERL_CRASH_DUMP_BYTES="0",
        )
        return env

    def _spawn(self) -> int:
        """Start the emulator; return the console log offset its readiness line will follow."""
        (self.dir / "rabbitmq.conf").write_text(self.config_text(), encoding="utf-8")
        (self.dir / "advanced.config").write_text("[].\n", encoding="utf-8")
        return self.process.spawn([str(_SERVER)], cwd=self.dir, env=self._env())

    def _wait_listening(self, offset: int, deadline: float) -> None:
        """Wait until RabbitMQ says it started, after ``offset``, and MQTT and WebSockets
        accept TCP."""
        self.process.wait_listening(
            self.cluster.host,
            self.mqtt_port,
            offset=offset,
            deadline=deadline,
            ready=lambda log: _READY in log,
        )
        self.process.wait_listening(
            self.cluster.host, self.ws_port, offset=offset, deadline=deadline
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start the node (again) and return once its MQTT port accepts connections.

        A node that was part of the cluster rejoins it by itself (its mnesia directory knows
        the other nodes). Raises RuntimeError (with the end of its log) on exit or timeout.
        """
        with self.cluster._lock:
            offset = self._spawn()
            try:
                self._wait_listening(offset, time.monotonic() + timeout)
            except BaseException:
                self.kill()
                raise

    def kill(self) -> None:
        """``kill -9`` the node's emulator by PID and reap it: nothing is flushed or said."""
        self.process.kill()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node gracefully (SIGTERM: RabbitMQ's own handler stops the node), killing
        it after ``timeout``."""
        self.process.stop(timeout)

    def restart(self, timeout: float = 60.0, *, kill: bool = True) -> float:
        """Kill (default) or stop the node, start it again; return the seconds until it listens."""
        with self.cluster._lock:
            self.kill() if kill else self.stop()
            started = time.monotonic()
            self.start(timeout)
            return time.monotonic() - started

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"<RabbitMQNode {self.name} mqtt={self.cluster.host}:{self.mqtt_port} {state}>"


class RabbitMQCluster(BrokerRunner):
    """N RabbitMQ nodes on 127.0.0.1, joined into one cluster, speaking MQTT 3.1.1.

    ``with RabbitMQCluster(3) as cluster:`` starts an ``epmd`` on a free port, the nodes in
    parallel, and joins nodes 2..N to node 1; leaving the block stops every process it started
    (by PID) and removes the temporary directory. ``cluster.nodes[i].url`` is node i's MQTT URL
    (``ws_url`` over WebSockets; ``url_list``/``ws_url_list`` all of them as one ``mqtt_url``);
    ``cluster.kill(i)`` is ``kill -9``, ``cluster.restart(i)`` kills and starts it again (it
    rejoins). The ``a``-prefixed methods do the same in a worker thread, so that a test's event
    loop keeps serving its clients meanwhile. ``start_seconds`` and ``join_seconds`` say how
    long booting and joining took.

    ``durable_queue_type``: ``"classic"`` (RabbitMQ's default) or ``"quorum"``, the queue type
    of the MQTT sessions that are not clean. ``extra_config`` is appended to each node's
    ``rabbitmq.conf``. Raises RuntimeError when RabbitMQ is not installed.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        username: str = "tars",
        durable_queue_type: str = "classic",
        extra_config: str = "",
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        if host != "127.0.0.1":
            raise ValueError("the cluster listens on 127.0.0.1 only")
        if durable_queue_type not in ("classic", "quorum"):
            raise ValueError("durable_queue_type is 'classic' or 'quorum'")
        if not rabbitmq_available():
            raise RuntimeError(f"RabbitMQ not found: {INSTALL_HINT}")
        self.host = host
        self.username = username
        self.password = secrets.token_hex(8)
        self.durable_queue_type = durable_queue_type
        self.extra_config = extra_config
        self.token = secrets.token_hex(3)
        self.cookie = secrets.token_hex(16)
        super().__init__(workdir, prefix="tars-rabbitmq-", unsafe="\"'\\")
        self.inetrc = self.workdir / "inetrc"
        self.inetrc.write_text(
            '{lookup,["file","native"]}.\n{host,{127,0,0,1},["localhost"]}.\n', encoding="utf-8"
        )
        self.env_file = self.workdir / "rabbitmq-env.conf"
        self.env_file.write_text("# Nothing: every setting is in the environment.\n")
        self.plugins_file = self.workdir / "enabled_plugins"
        self.plugins_file.write_text(_PLUGINS + "\n", encoding="utf-8")
        self.epmd_port = 0
        self.ctl_port = free_port(host)
        self._epmd = BrokerProcess("epmd", self.workdir / "epmd.log")
        self.nodes = [RabbitMQNode(self, i) for i in range(size)]
        self.start_seconds: float | None = None
        self.join_seconds: float | None = None

    @property
    def urls(self) -> list[str]:
        """Each node's MQTT URL, node 1 first."""
        return [node.url for node in self.nodes]

    @property
    def url_list(self) -> str:
        """All node URLs as one comma-separated ``mqtt_url``."""
        return ",".join(self.urls)

    @property
    def ws_url_list(self) -> str:
        """All node WebSocket URLs as one comma-separated ``mqtt_url``."""
        return ",".join(node.ws_url for node in self.nodes)

    def _start_epmd(self, deadline: float) -> None:
        """Our own epmd in the foreground (so we hold its PID), on a free loopback port."""
        while True:
            self.epmd_port = free_port(self.host)
            offset = self._epmd.spawn([_EPMD, "-port", str(self.epmd_port), "-address", self.host])
            try:
                self._epmd.wait_listening(
                    self.host, self.epmd_port, offset=offset, deadline=deadline
                )
                return
            except ProcessExited:
                if time.monotonic() >= deadline:
                    raise
                # The port was taken meanwhile: try another.

    def start(self, timeout: float = 180.0) -> None:
        """Start epmd and every node, then join nodes 2..N to node 1.

        Returns once every node's MQTT port accepts connections after its join. Raises
        RuntimeError (with the end of the failing node's log); what was started is stopped.
        """
        with self._lock:
            self._check_open()
            started = time.monotonic()
            deadline = started + timeout
            try:
                self._start_epmd(deadline)
                offsets = [node._spawn() for node in self.nodes]
                for node, offset in zip(self.nodes, offsets, strict=True):
                    node._wait_listening(offset, deadline)
                booted = time.monotonic()
                self.start_seconds = booted - started
                first = self.nodes[0]
                for node in self.nodes[1:]:
                    # rabbitmqctl stop_app, join_cluster, start_app in one CLI run: each run
                    # boots an Erlang VM and the CLI (seconds on a loaded machine).
                    offset = node.log_path.stat().st_size
                    self.ctl(
                        node.index,
                        "eval",
                        f"ok = rabbit:stop(), ok = rabbit_mnesia:join_cluster('{first.name}', "
                        "disc), rabbit:start().",
                    )
                    node._wait_listening(offset, deadline)
                self.join_seconds = time.monotonic() - booted
            except BaseException:
                self._stop_all()
                raise

    def ctl(self, index: int, *args: str, timeout: float = 60.0) -> str:
        """Run a ``rabbitmqctl`` command against node ``index``; return its output.

        Raises RuntimeError with the output when the command fails.
        """
        node = self.nodes[index]
        with self._lock:  # one CLI at a time: they share the CLI's distribution port
            result = subprocess.run(
                [str(_CTL), "-n", node.name, *args],
                cwd=self.workdir,
                env=node._env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name}: {output.strip()}")
        return output

    def running_nodes(self, index: int) -> set[str]:
        """The nodes that node ``index`` sees running in its cluster."""
        status = json.loads(self.ctl(index, "cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    @property
    def majority_lost(self) -> bool:
        """True when most nodes are not running. Starting them again is then slow or stuck
        (measured on 3.10.8): the MQTT plugin's client-id tracking is a Raft cluster across
        the nodes, and the first node started again waits about 100 s for it to get a quorum;
        started together with the survivors stopped, one node sometimes never finishes.
        Start a new cluster instead (the test fixture does)."""
        return sum(not node.is_running for node in self.nodes) * 2 > len(self.nodes)

    def set_durable_queue_type(self, kind: str) -> None:
        """The queue type of the MQTT sessions declared from now on (``"classic"`` or
        ``"quorum"``), on every running node and on nodes started later.

        ``rabbitmq_mqtt`` reads ``durable_queue_type`` from its application environment at each
        queue declaration, so one cluster serves tests of both kinds.
        """
        if kind not in ("classic", "quorum"):
            raise ValueError("durable_queue_type is 'classic' or 'quorum'")
        self.durable_queue_type = kind  # for nodes started later: rabbitmq.conf
        running = next(node.index for node in self.nodes if node.is_running)
        self.ctl(
            running,
            "eval",
            "[ok = rpc:call(N, application, set_env, [rabbitmq_mqtt, durable_queue_type, "
            f"{kind}]) || N <- [node() | nodes()]], ok.",
        )

    def queues(self, index: int) -> list[dict[str, object]]:
        """The queues node ``index`` knows of: name, type, durable, messages, leader (quorum)
        and members, as ``rabbitmqctl list_queues`` says."""
        columns = ("name", "type", "durable", "messages", "leader", "members", "pid")
        output = self.ctl(index, "list_queues", *columns, "--formatter", "json", "--quiet")
        result: list[dict[str, object]] = json.loads(output)
        return result

    def kill(self, index: int) -> None:
        """``kill -9`` node ``index`` (0-based)."""
        self.nodes[index].kill()

    def restart(self, index: int, timeout: float = 60.0, *, kill: bool = True) -> float:
        """Kill (or stop) node ``index`` and start it again; return the seconds it took to
        listen again (it rejoins the cluster by itself)."""
        return self.nodes[index].restart(timeout, kill=kill)

    def start_node(self, index: int, timeout: float = 60.0) -> None:
        """Start a killed or stopped node again (it rejoins the cluster by itself)."""
        self.nodes[index].start(timeout)

    def revive(self, timeout: float = 90.0) -> list[int]:
        """Start again every node that is not running, in parallel; return their indexes.

        Each rejoins the cluster by itself; one node in about 15 s. Not when most nodes are
        down (see :attr:`majority_lost`). Raises RuntimeError as :meth:`RabbitMQNode.start`.
        """
        with self._lock:
            dead = [node for node in self.nodes if not node.is_running]
            deadline = time.monotonic() + timeout
            try:
                offsets = [node._spawn() for node in dead]
                for node, offset in zip(dead, offsets, strict=True):
                    node._wait_listening(offset, deadline)
            except BaseException:
                for node in dead:
                    node.kill()
                raise
            return [node.index for node in dead]

    async def arevive(self, timeout: float = 90.0) -> list[int]:
        return await asyncio.to_thread(self.revive, timeout)

    async def akill(self, index: int) -> None:
        await asyncio.to_thread(self.kill, index)

    async def arestart(self, index: int, timeout: float = 60.0, *, kill: bool = True) -> float:
        return await asyncio.to_thread(self.restart, index, timeout, kill=kill)

    async def astart_node(self, index: int, timeout: float = 60.0) -> None:
        await asyncio.to_thread(self.start_node, index, timeout)

    async def actl(self, index: int, *args: str) -> str:
        return await asyncio.to_thread(self.ctl, index, *args)

    async def arunning_nodes(self, index: int) -> set[str]:
        return await asyncio.to_thread(self.running_nodes, index)

    async def aqueues(self, index: int) -> list[dict[str, object]]:
        return await asyncio.to_thread(self.queues, index)

    async def aset_durable_queue_type(self, kind: str) -> None:
        await asyncio.to_thread(self.set_durable_queue_type, kind)

    def _stop_all(self) -> None:
        # SIGTERM to every node first, then wait: the nodes shut down in parallel.
        for node in self.nodes:
            node.process.terminate()
        for node in self.nodes:
            node.process.wait_or_kill(30.0)
        self._epmd.stop(5.0)

    def __repr__(self) -> str:
        return f"<RabbitMQCluster {len(self.nodes)} nodes {self.nodes!r}>"
