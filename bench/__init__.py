"""Benchmarks of tars-core against raw gmqtt, aiomqtt and paho-mqtt (``make bench``).

Benchmark-only: nothing under ``src/`` imports this package or the peer libraries it measures.
``python -m bench`` runs everything and writes ``bench/RESULTS.md``;
``python -m bench.run_one`` runs one (client, case) against a broker you started.
"""
