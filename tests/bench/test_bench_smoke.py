"""Smoke test of the benchmark harness: ``python -m bench --quick`` runs and reports everything.

It runs the real thing (its own Mosquitto, one process per client and case, a few hundred
messages each) and checks the report, never the figures: on a shared machine they mean nothing
at this size.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PEERS = ("gmqtt", "aiomqtt", "paho")
TARS = ("tars_event", "tars_raw", "tars_proto")
CASES = (
    "qos0_pipelined",
    "qos1_pipelined",
    "qos0_sequential",
    "qos1_sequential",
    "rtt_qos0",
    "rtt_qos1",
    "rss",
    "large_qos0",
)


def _tars_client_exists() -> bool:
    try:
        from tars.mqtt import Message, MQTTClient  # noqa: F401
    except ImportError:
        return False
    return True


def _section(report: str, case: str) -> str:
    """The Markdown of one case's table (from its heading to the next heading)."""
    for chunk in report.split("\n### ")[1:]:
        if f"(`{case}`," in chunk.splitlines()[0]:
            return chunk.split("\n## ")[0]
    raise AssertionError(f"no section for {case} in the report")


@pytest.mark.timeout(240)  # about 25 s of CPU, but minutes of wall time on a loaded machine
def test_quick_bench_reports_every_client_and_case(tmp_path: Path) -> None:
    report_path, raw_path = tmp_path / "RESULTS.md", tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(report_path),
         "--json", str(raw_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = {(r["client"], r["case"]): r for r in json.loads(raw_path.read_text())}
    assert set(results) == {(client, case) for client in PEERS + TARS for case in CASES}
    tars_status = "ok" if _tars_client_exists() else "unavailable"
    for (client, case), result in results.items():
        expected = tars_status if client in TARS else "ok"
        assert result["status"] == expected, (client, case, result.get("error"))

    report = report_path.read_text(encoding="utf-8")
    assert proc.stdout.strip() == report.strip()
    for case in CASES:
        rows = [line for line in _section(report, case).splitlines() if line.startswith("| ")]
        clients = [row.split("|")[1].strip().rstrip(" †") for row in rows[1:]]
        assert clients == [*TARS, *PEERS], case
    startup = report.split("### Start-up", 1)[1].split("\n## ", 1)[0]
    header, _, *rows = [line for line in startup.splitlines() if line.startswith("|")]
    assert [c.strip() for c in header.split("|")[2:-1]] == [
        "`tars_event`", "`gmqtt`", "`aiomqtt`", "`paho`", "vs gmqtt", "vs aiomqtt", "vs paho",
    ]  # fmt: skip
    assert [row.split("|")[1].strip() for row in rows] == [
        "import (ms)", "import + client from config (ms)", "RSS then (MB)", "first event (ms)",
    ]  # fmt: skip
    assert "> 1 means tars-core starts faster or smaller" in startup
    samples = json.loads((tmp_path / "startup.json").read_text())
    assert all("error" not in sample for sample in samples), samples
    assert "## Targets" in report
    assert "> 1 means the row is better" in report


def test_the_durable_outbox_rows_run(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.durable", "--events", "60", "--repeat", "1",
         "--dir", str(tmp_path)],
        cwd=ROOT, check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| ") and "µs" not in line]
    assert len(rows) == 5  # three store rows, two client rows (memory, durable)
    assert all(float(row.rsplit("|", 2)[1]) > 0 for row in rows)
    assert list(tmp_path.iterdir()) == []  # each run's store is removed


def test_quick_websocket_row_beside_tcp(tmp_path: Path) -> None:
    """``tars_ws`` (tars_raw over ws://, Mosquitto's WebSocket listener) reports beside
    ``tars_raw``; the 64 KiB case is not run, with the reason shown."""
    report_path, raw_path = tmp_path / "ws.md", tmp_path / "ws.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--clients", "tars_raw,tars_ws",
         "--cases", "qos1_pipelined,rtt_qos1,large_qos0", "--startup-repeat", "0",
         "--output", str(report_path), "--json", str(raw_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {(r["client"], r["case"]): r["status"] for r in json.loads(raw_path.read_text())}
    assert results == {
        ("tars_raw", "qos1_pipelined"): "ok",
        ("tars_ws", "qos1_pipelined"): "ok",
        ("tars_raw", "rtt_qos1"): "ok",
        ("tars_ws", "rtt_qos1"): "ok",
        ("tars_raw", "large_qos0"): "ok",
        ("tars_ws", "large_qos0"): "not run",
    }
    large = _section(report_path.read_text(encoding="utf-8"), "large_qos0")
    assert "| tars_ws | not run: Mosquitto 2.0.11's WebSocket listener stalls" in large


def test_quick_bench_runs_tars_core_and_gmqtt_on_uvloop_in_one_run(tmp_path: Path) -> None:
    """``name@uvloop`` clients (issue 20): the same adapters on uvloop, compared with
    gmqtt on uvloop in the same run."""
    report_path, raw_path = tmp_path / "RESULTS.md", tmp_path / "results.json"
    clients = ("tars_event@uvloop", "tars_raw@uvloop", "gmqtt@uvloop")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--clients", ",".join(clients),
         "--cases", "qos1_pipelined,rtt_qos1", "--startup-repeat", "0",
         "--output", str(report_path), "--json", str(raw_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(raw_path.read_text())
    assert {(r["client"], r["status"]) for r in results} == {(c, "ok") for c in clients}
    section = _section(report_path.read_text(encoding="utf-8"), "qos1_pipelined")
    header, *rows = [line for line in section.splitlines() if line.startswith("| ")]
    assert "vs gmqtt@uvloop" in header
    assert [row.split("|")[1].strip() for row in rows] == list(clients)


@pytest.mark.timeout(120)
def test_the_phase_breakdown_names_each_phase_of_each_client() -> None:
    """``python -m bench.phases`` (issue 18's diagnostic): a line per client and repeat, with
    the envelope's phases on the envelope client only."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.phases", "--clients", "tars_event,tars_raw",
         "--case", "qos1_pipelined", "--n", "300", "--repeat", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["tars_event", "tars_raw"]
    event, raw = lines
    for phase in ("publish", "data_received", "offer", "handler", "loop"):
        assert f" {phase} " in event
        assert f" {phase} " in raw
    for phase in ("publish_event", "encode_event", "dedup_seen"):
        assert f" {phase} " in event
        assert f" {phase} " not in raw


@pytest.mark.timeout(120)
def test_the_opcode_count_gives_each_client_its_work_per_message() -> None:
    """``python -m bench.opcount``: deterministic work per message (issue 18), a line per case
    and client, the busiest functions under it with ``--by function``."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.opcount", "--clients", "tars_event,tars_raw",
         "--cases", "qos0_pipelined", "--n", "100", "--by", "function", "--top", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    heads = [line.split() for line in lines if not line.startswith(" ")]
    assert [(h[0], h[1]) for h in heads] == [
        ("qos0_pipelined", "tars_event"),
        ("qos0_pipelined", "tars_raw"),
    ]
    opcodes = {h[1]: float(h[5].replace(",", "")) for h in heads}
    assert 0 < opcodes["tars_raw"] < opcodes["tars_event"]  # the envelope is work
    assert len(lines) == 2 + 2 * 3
    for line in lines[1:4] + lines[5:8]:  # "   118.8  _message.py:dedup_key"
        count, where = line.split()
        assert float(count) > 0
        assert re.fullmatch(r"[\w.]+\.py:\w+", where), line
