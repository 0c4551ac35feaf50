"""A real ejabberd cluster on 127.0.0.1, for failover tests.

Mosquitto is one process: it cannot show what a client does when the node it is on dies while
the rest of the broker lives on. ejabberd (``mod_mqtt``, MQTT 5) clusters over Erlang
distribution and mnesia, is one ``apt-get install`` away, and is small enough (about 80 MB a
node) to run three nodes in CI.

:class:`EjabberdCluster` starts N nodes, each in its own directory (configuration, mnesia spool,
logs), each with its own MQTT port, distribution port and node name, all sharing a cookie of
their own and an ``epmd`` of their own on a free port. Everything listens on 127.0.0.1 only.
Nothing goes through ``ejabberdctl`` (as root it switches to the ``ejabberd`` user and the
system's cookie and directories): nodes are ``erl`` processes we start and whose PID we hold
(``erl`` execs the emulator, so the PID is the ``beam.smp`` itself), and admin commands go
through the same ``ejabberd_ctl`` module that ``ejabberdctl`` calls. Every process is stopped by
its PID; the system's ``epmd`` (port 4369) is never touched. Starting, waiting for the listener
and stopping by PID are :class:`tars.mqtt.testing._process.BrokerProcess`'s, shared with the
Mosquitto runner.

What ejabberd 23.01 does, measured here: a node starts in about 1 s and joins in about 1 s;
a node killed with ``kill -9`` and started again on the same spool rejoins the cluster by
itself (mnesia remembers its peers). Anonymous login needs a user name and a non-empty
password (the node URLs carry both). ejabberd refuses ``$share`` filters (SUBACK 0x9E), keeps
one QoS 1/2 message in flight per session, and keeps a session on the node it was made on.
"""

from __future__ import annotations

import asyncio
import glob
import os
import secrets
import subprocess
import time
from pathlib import Path

from tars.mqtt.testing._process import BrokerProcess, BrokerRunner, ProcessExited, free_port

__all__ = ["EjabberdCluster", "EjabberdNode", "ejabberd_available"]

INSTALL_HINT = "apt-get install -y --no-install-recommends ejabberd"
_ERL = "/usr/bin/erl"
_EPMD = "/usr/bin/epmd"
# The emulator's idle schedulers spin before sleeping; on a shared 2-core CI machine that is
# CPU taken from the tests. One scheduler per node is plenty for a test load.
_VM_FLAGS = ("+S", "1:1", "+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none")


def _ejabberd_libs() -> str | None:
    """The directory that holds ``ejabberd-<version>/`` (Debian: /usr/lib/<arch>)."""
    found = sorted(glob.glob("/usr/lib/*/ejabberd-*/ebin/ejabberd.app"))
    return str(Path(found[-1]).parent.parent.parent) if found else None


def ejabberd_available() -> bool:
    """True when Debian's ejabberd package (erl, epmd and the ejabberd libraries) is installed."""
    return all(os.access(p, os.X_OK) for p in (_ERL, _EPMD)) and _ejabberd_libs() is not None


class EjabberdNode:
    """One node of an :class:`EjabberdCluster`; ports and name stay the same across restarts."""

    def __init__(self, cluster: EjabberdCluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"tars{index + 1}-{cluster.token}@localhost"
        self.mqtt_port = free_port(cluster.host)
        self.ws_port = free_port(cluster.host)  # MQTT over WebSockets (ejabberd_http, /mqtt)
        self.dist_port = free_port(cluster.host)
        self.dir = cluster.workdir / f"node{index + 1}"
        self.spool = self.dir / "spool"
        self.spool.mkdir(parents=True)
        self.process = BrokerProcess(self.name, self.dir / "console.log")

    @property
    def url(self) -> str:
        """``mqtt://user:password@127.0.0.1:port`` of this node's MQTT listener."""
        c = self.cluster
        return f"mqtt://{c.username}:{c.password}@{c.host}:{self.mqtt_port}"

    @property
    def ws_url(self) -> str:
        """``ws://user:password@127.0.0.1:port/mqtt``: the same broker over WebSockets."""
        c = self.cluster
        return f"ws://{c.username}:{c.password}@{c.host}:{self.ws_port}/mqtt"

    @property
    def redacted_url(self) -> str:
        """:attr:`url` with the password masked, as a client's ``broker`` property shows it."""
        c = self.cluster
        return f"mqtt://{c.username}:***@{c.host}:{self.mqtt_port}"

    @property
    def pid(self) -> int | None:
        """The PID of the node's ``beam.smp``, or None when it is not running."""
        return self.process.pid

    @property
    def is_running(self) -> bool:
        return self.process.is_running

    @property
    def config_path(self) -> Path:
        return self.dir / "ejabberd.yml"

    @property
    def log_path(self) -> Path:
        """The node's console (stdout and stderr: ejabberd's log lines and any crash report)."""
        return self.process.log_path

    def config_text(self) -> str:
        c = self.cluster
        return "\n".join(
            [
                "# Written by tests/support/ejabberd.py: a throwaway cluster node for tests.",
                'hosts: ["localhost"]',
                "loglevel: info",  # the readiness line ("Start accepting TCP ...") is info
                "hide_sensitive_log_data: true",
                "listen:",
                f"  - port: {self.mqtt_port}",
                f'    ip: "{c.host}"',
                "    module: mod_mqtt",
                "    backlog: 1024",
                # MQTT over WebSockets: ejabberd's HTTP listener hands /mqtt to mod_mqtt.
                f"  - port: {self.ws_port}",
                f'    ip: "{c.host}"',
                "    module: ejabberd_http",
                "    request_handlers:",
                "      /mqtt: mod_mqtt",
                # Anonymous login: any user name with any non-empty password gets in, and one
                # name may be used by any number of clients at once.
                "auth_method: [anonymous]",
                "anonymous_protocol: login_anon",
                "allow_multiple_connections: true",
                "modules:",
                "  mod_mqtt:",
                # Default 5000 messages per offline session: a test with 10,000 events would
                # see the broker drop some and blame the client.
                "    max_queue: unlimited",
                f"    session_expiry: {c.max_session_expiry}",
                c.extra_config,
                "",
            ]
        )

    def _env(self) -> dict[str, str]:
        c = self.cluster
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ERL_", "EJABBERD_"))}
        env.update(
            HOME=str(self.dir),  # erl never reads or writes the user's ~/.erlang.cookie
            EJABBERD_CONFIG_PATH=str(self.config_path),
            EJABBERD_LOG_PATH=str(self.dir / "ejabberd.log"),
            ERL_LIBS=c.libs,
            ERL_INETRC=str(c.inetrc),
            ERL_EPMD_ADDRESS=c.host,
            ERL_EPMD_PORT=str(c.epmd_port),
            ERL_CRASH_DUMP_BYTES="0",
        )
        return env

    def _spawn(self) -> int:
        """Start the emulator; return the console log offset its readiness line will follow."""
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        command = [
            _ERL,
            "-sname",
            self.name,
            "-setcookie",
            self.cluster.cookie,
            "-start_epmd",
            "false",
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            "inet_dist_listen_min",
            str(self.dist_port),
            "inet_dist_listen_max",
            str(self.dist_port),
            *_VM_FLAGS,
            "-noinput",
            "-mnesia",
            "dir",
            f'"{self.spool}"',
            "-s",
            "ejabberd",
        ]
        return self.process.spawn(command, cwd=self.spool, env=self._env())

    def _wait_listening(self, offset: int, deadline: float) -> None:
        """Wait until ejabberd logs that its MQTT listeners (TCP, WebSockets) accept, after
        ``offset``."""
        markers = [
            f"Start accepting TCP connections at {self.cluster.host}:{port}"
            for port in (self.mqtt_port, self.ws_port)
        ]
        self.process.wait_listening(
            self.cluster.host,
            self.mqtt_port,
            offset=offset,
            deadline=deadline,
            ready=lambda log: all(marker in log for marker in markers),
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start the node (again) and return once its MQTT port accepts connections.

        A node that was part of the cluster rejoins it by itself: its mnesia spool knows the
        other nodes. Raises RuntimeError (with the end of its log) on exit or timeout.
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

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the node gracefully (SIGTERM; an Erlang node then runs ``init:stop()``),
        killing it after ``timeout``."""
        self.process.stop(timeout)

    def restart(self, timeout: float = 30.0, *, kill: bool = True) -> float:
        """Kill (default) or stop the node, start it again; return the seconds until it listens."""
        with self.cluster._lock:
            self.kill() if kill else self.stop()
            started = time.monotonic()
            self.start(timeout)
            return time.monotonic() - started

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"<EjabberdNode {self.name} mqtt={self.cluster.host}:{self.mqtt_port} {state}>"


class EjabberdCluster(BrokerRunner):
    """N ejabberd nodes on 127.0.0.1, joined into one cluster.

    ``with EjabberdCluster(3) as cluster:`` starts an ``epmd`` on a free port, the nodes in
    parallel, and joins nodes 2..N to node 1; leaving the block stops every process it started
    (by PID) and removes the temporary directory. ``cluster.nodes[i].url`` is node i's MQTT URL
    (``cluster.urls`` all of them, ``cluster.url_list`` as one comma-separated ``mqtt_url``;
    ``ws_url`` and ``ws_url_list`` the same over WebSockets);
    ``cluster.kill(i)`` is ``kill -9``, ``cluster.restart(i)`` kills and starts it again (it
    rejoins). The ``a``-prefixed methods do the same in a worker thread, so that a test's event
    loop keeps serving its clients meanwhile.

    ``extra_config`` is appended to each node's ejabberd.yml (for example more ``mod_mqtt``
    options, indented by four spaces). Raises RuntimeError when ejabberd is not installed.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        username: str = "tars",
        password: str = "anonymous",
        max_session_expiry: int = 3600,
        extra_config: str = "",
        workdir: str | os.PathLike[str] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        if host != "127.0.0.1":
            raise ValueError("the cluster listens on 127.0.0.1 only")
        libs = _ejabberd_libs()
        if not ejabberd_available() or libs is None:
            raise RuntimeError(f"ejabberd not found: {INSTALL_HINT}")
        self.host = host
        self.username = username
        self.password = password
        self.max_session_expiry = max_session_expiry
        self.extra_config = extra_config
        self.libs = libs
        self.token = secrets.token_hex(3)
        self.cookie = secrets.token_hex(16)
        super().__init__(workdir, prefix="tars-ejabberd-", unsafe="\"'\\")
        self.inetrc = self.workdir / "inetrc"
        self.inetrc.write_text(
            '{lookup,["file","native"]}.\n{host,{127,0,0,1},["localhost"]}.\n', encoding="utf-8"
        )
        self.epmd_port = 0
        self._epmd = BrokerProcess("epmd", self.workdir / "epmd.log")
        self.nodes = [EjabberdNode(self, i) for i in range(size)]
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

    def start(self, timeout: float = 60.0) -> None:
        """Start epmd and every node, then join nodes 2..N to node 1.

        Returns once every node's MQTT port accepts connections after its join. Raises
        RuntimeError (with the end of the failing node's log); what was started is stopped.
        """
        with self._lock:
            self._check_open()
            deadline = time.monotonic() + timeout
            try:
                self._start_epmd(deadline)
                offsets = [node._spawn() for node in self.nodes]
                for node, offset in zip(self.nodes, offsets, strict=True):
                    node._wait_listening(offset, deadline)
                started = time.monotonic()
                first = self.nodes[0]
                for node in self.nodes[1:]:
                    # join_cluster restarts ejabberd on the joining node: wait for it to listen.
                    offset = node.log_path.stat().st_size
                    self.ctl(node.index, "join_cluster", first.name)
                    node._wait_listening(offset, deadline)
                self.join_seconds = time.monotonic() - started
            except BaseException:
                self._stop_all()
                raise

    def ctl(self, index: int, *args: str, timeout: float = 30.0) -> str:
        """Run an ``ejabberdctl`` command against node ``index``; return its output.

        Raises RuntimeError with the output when the command fails.
        """
        node = self.nodes[index]
        command = [
            _ERL,
            "-sname",
            f"ctl{secrets.token_hex(3)}-{self.token}@localhost",
            "-setcookie",
            self.cookie,
            "-start_epmd",
            "false",
            "-hidden",
            "-noinput",
            "-kernel",
            "inet_dist_use_interface",
            "{127,0,0,1}",
            *_VM_FLAGS,
            "-s",
            "ejabberd_ctl",
            "-extra",
            node.name,
            *args,
        ]
        result = subprocess.run(
            command,
            cwd=self.workdir,
            env=node._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode != 0:
            raise RuntimeError(f"ejabberdctl {' '.join(args)} on {node.name}: {output.strip()}")
        return output

    def cluster_nodes(self, index: int) -> set[str]:
        """The nodes that node ``index`` counts as cluster members (``list_cluster``)."""
        return set(self.ctl(index, "list_cluster").split())

    def kill(self, index: int) -> None:
        """``kill -9`` node ``index`` (0-based)."""
        self.nodes[index].kill()

    def restart(self, index: int, timeout: float = 30.0, *, kill: bool = True) -> float:
        """Kill (or stop) node ``index`` and start it again; return the seconds it took to
        listen again (it rejoins the cluster by itself)."""
        return self.nodes[index].restart(timeout, kill=kill)

    def start_node(self, index: int, timeout: float = 30.0) -> None:
        """Start a killed or stopped node again (it rejoins the cluster by itself)."""
        self.nodes[index].start(timeout)

    def revive(self, timeout: float = 30.0) -> list[int]:
        """Start again every node that is not running, in parallel; return their indexes.

        Each rejoins the cluster by itself. Raises RuntimeError as :meth:`EjabberdNode.start`.
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

    async def akill(self, index: int) -> None:
        await asyncio.to_thread(self.kill, index)

    async def arestart(self, index: int, timeout: float = 30.0, *, kill: bool = True) -> float:
        return await asyncio.to_thread(self.restart, index, timeout, kill=kill)

    async def astart_node(self, index: int, timeout: float = 30.0) -> None:
        await asyncio.to_thread(self.start_node, index, timeout)

    def _stop_all(self) -> None:
        # SIGTERM to every node first, then wait: the nodes shut down in parallel.
        for node in self.nodes:
            node.process.terminate()
        for node in self.nodes:
            node.process.wait_or_kill(15.0)
        self._epmd.stop(5.0)

    def __repr__(self) -> str:
        return f"<EjabberdCluster {len(self.nodes)} nodes {self.nodes!r}>"
