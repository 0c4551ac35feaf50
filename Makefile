# Two commands do all the set-up on a fresh machine (Python 3.11+):
#   make demo   - two small services exchanging events through a broker
#   make test   - the whole test suite (installs Mosquitto, ejabberd and RabbitMQ when missing
#                 and root, and amqtt in .venv-amqtt; not root and without ejabberd or RabbitMQ:
#                 every test but the ejabberd- or rabbitmq-marked ones, said so)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench clean mosquitto ejabberd rabbitmq amqtt

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tars.mqtt.demo

mosquitto:
	@{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } && command -v mosquitto_pub >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq || true) && apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null; \
	  else echo "Mosquitto or openssl not found: apt-get install mosquitto mosquitto-clients openssl"; exit 1; fi; }

# The 3-node cluster of the failover tests (tests/support/ejabberd.py starts its own nodes).
# Installed when missing and root; otherwise `make test` deselects the ejabberd-marked tests.
EJABBERD_OK := [ -x /usr/bin/erl ] && ls /usr/lib/*/ejabberd-*/ebin/ejabberd.app >/dev/null 2>&1
EJABBERD_NOTE := ejabberd is not installed (and this is not root): the ejabberd-marked tests (3-node cluster failover) are deselected; to run them: apt-get install --no-install-recommends ejabberd (as root)
ejabberd:
	@{ $(EJABBERD_OK); } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ejabberd >/dev/null; \
	  else echo "note: $(EJABBERD_NOTE)"; fi; }

# The 3-node MQTT 3.1.1 cluster of the RabbitMQ tests (tests/support/rabbitmq.py starts its own
# nodes; Debian's package does not start the service where policy-rc.d forbids it, and the tests
# never use it). Installed when missing and root; otherwise `make test` deselects its tests.
RABBITMQ_OK := [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]
RABBITMQ_NOTE := RabbitMQ is not installed (and this is not root): the rabbitmq-marked tests (3-node MQTT 3.1.1 cluster) are deselected; to run them: apt-get install --no-install-recommends rabbitmq-server (as root)
rabbitmq:
	@{ $(RABBITMQ_OK); } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null; \
	  else echo "note: $(RABBITMQ_NOTE)"; fi; }

# amqtt, a 3.1.1 broker, in a venv of its own (.venv-amqtt): it pins websockets 15, we need 17.
amqtt: $(STAMP)
	$(PY) -c 'import sys; sys.path.insert(0, "tests"); from support.amqtt import amqtt_command; amqtt_command()'

# The second pass runs the contract suite, the core integration tests, the drop-in and the
# testing kit again on uvloop (what uvicorn brings): its transports are not asyncio's classes
# (issue 20). About 2 minutes (it boots the ejabberd and RabbitMQ clusters of the contract
# suite's WebSocket targets). Any non-zero status fails (5: nothing collected, included).
UVLOOP_TESTS := tests/contract tests/integration/test_client_*.py tests/integration/test_connection*.py \
  tests/integration/test_event_loop.py tests/integration/test_testing_kit_fixtures.py tests/adapters \
  tests/integration/test_resilience_retained.py
test: $(STAMP) mosquitto ejabberd rabbitmq amqtt
	@markers=""; notes=""; \
	if ! { $(EJABBERD_OK); }; then markers="not ejabberd"; notes="$(EJABBERD_NOTE)"; fi; \
	if ! { $(RABBITMQ_OK); }; then markers="$${markers:+$$markers and }not rabbitmq"; notes="$$notes $(RABBITMQ_NOTE)"; fi; \
	if [ -z "$$markers" ]; then \
	  $(PY) -m pytest && TARS_TEST_LOOP=uvloop $(PY) -m pytest $(UVLOOP_TESTS); else \
	  $(PY) -m pytest -m "$$markers" && TARS_TEST_LOOP=uvloop $(PY) -m pytest -m "$$markers" $(UVLOOP_TESTS); \
	  status=$$?; echo "note: $$notes"; exit $$status; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

# The run behind bench/RESULTS.md (about 45 minutes): every client and case, medians of 3,
# tars-core and gmqtt on uvloop too (name@uvloop);
# then memory over 1,000,000 messages for the clients that finish it in minutes (its table is
# written to bench/out/rss.md and copied into RESULTS.md by hand); then tars_raw over TCP beside
# tars_ws, the same over WebSockets (bench/out/ws.md, copied into RESULTS.md by hand too); then
# MQTT 5 beside MQTT 3.1.1 (tars_*_311, bench/out/311.md, copied into RESULTS.md by hand too).
BENCH_CLIENTS := tars_event,tars_raw,tars_proto,gmqtt,aiomqtt,paho,tars_event@uvloop,tars_raw@uvloop,gmqtt@uvloop
BENCH_CASES := qos0_pipelined,qos1_pipelined,qos0_sequential,qos1_sequential,rtt_qos0,rtt_qos1,large_qos0
bench: $(STAMP) mosquitto
	$(PY) -m bench --repeat 3 --clients $(BENCH_CLIENTS) --cases $(BENCH_CASES) --n qos1_sequential=2000 --timeout-scale 3 \
	  --output bench/RESULTS.md --json bench/out/main.json
	$(PY) -m bench --repeat 1 --cases rss --clients tars_event,tars_raw,tars_proto,gmqtt \
	  --n rss=1000000 --timeout-scale 3 --output bench/out/rss.md --json bench/out/rss.json
	$(PY) -m bench --repeat 3 --cases qos0_pipelined,qos1_pipelined,qos1_sequential,rtt_qos0,rtt_qos1 \
	  --clients tars_raw,tars_ws --n qos1_sequential=2000 --startup-repeat 0 --timeout-scale 3 \
	  --output bench/out/ws.md --json bench/out/ws.json
	$(PY) -m bench --repeat 3 --cases qos0_pipelined,qos1_pipelined,rtt_qos1 \
	  --clients tars_event,tars_event_311,tars_raw,tars_raw_311 --startup-repeat 0 --timeout-scale 3 \
	  --output bench/out/311.md --json bench/out/311.json

clean:
	rm -rf $(VENV) .venv-amqtt build dist .mypy_cache .ruff_cache
