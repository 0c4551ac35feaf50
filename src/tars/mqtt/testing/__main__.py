"""``python -m tars.mqtt.testing [--host 127.0.0.1] [--port 1883]``: the dev/test broker on TCP."""

from __future__ import annotations

import sys

from .._cli import main_broker

if __name__ == "__main__":
    sys.exit(main_broker(prog="python -m tars.mqtt.testing"))
