"""Adapters that put our control plane and peer task queues behind one interface.

Each module here holds one system (see ``base.Adapter``); peer libraries are imported
only inside functions, so this package imports (and type-checks) without them.
``SYSTEMS`` maps the names accepted by ``python -m bench peers --systems`` to
``module:class``.
"""

from __future__ import annotations

import importlib

from bench.peers.base import Adapter

SYSTEMS: dict[str, str] = {
    "aragora-redis": "bench.peers.aragora:AragoraRedis",
    "aragora-sqlite": "bench.peers.aragora:AragoraSqlite",
    "celery": "bench.peers.celery:CeleryAdapter",
    "rq": "bench.peers.rq:RqAdapter",
    "arq": "bench.peers.arq:ArqAdapter",
    "saq": "bench.peers.saq:SaqAdapter",
    "taskiq": "bench.peers.taskiq:TaskiqAdapter",
    "dramatiq": "bench.peers.dramatiq:DramatiqAdapter",
    "huey": "bench.peers.huey:HueyAdapter",
}
OURS = ("aragora-redis", "aragora-sqlite")
PEERS = tuple(name for name in SYSTEMS if name not in OURS)


def load_adapter(name: str) -> type[Adapter]:
    """The adapter class registered under ``name`` (KeyError when unknown)."""
    module_name, _, class_name = SYSTEMS[name].partition(":")
    cls: type[Adapter] = getattr(importlib.import_module(module_name), class_name)
    return cls
