"""gRPC core settings for toolcall's processes, applied before ``grpc`` loads.

grpcio 1.85 reads and writes every connection on its EventEngine thread pool,
which hands each completion to grpc.aio's poller thread, which hands it on to
the event loop. With EventEngine's client, listener and endpoints switched off
(the iomgr poller, gRPC's long-standing Linux path), the poller thread reads
the socket itself and one thread hand-off per completion disappears. Measured
on our 2-core VM with a bare echo server: 8.2 → 4.8 thread switches and
~360 → ~285 µs of server CPU per unary call (docs/performance.md).

gRPC reads ``GRPC_EXPERIMENTS`` once, when ``grpc`` is first imported, so
``toolcall/__init__.py`` calls ``apply()`` before anything imports grpc: the
registry, the LLMService, the CLI and every plugin built with ``plugin_stub``
get it, as long as the program imports toolcall (or plugin_stub) before grpc.
Child processes inherit it. A ``GRPC_EXPERIMENTS`` already set is the
operator's choice and is left alone; ``TOOLCALL_GRPC_TUNING=off`` turns this off.
"""

from __future__ import annotations

import os
import sys

EXPERIMENTS = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
OFF_VALUES = frozenset({"0", "off", "false", "no"})


def apply() -> bool:
    """Sets ``GRPC_EXPERIMENTS`` unless it is set, turned off, or too late.

    Returns True when this process runs with toolcall's settings.
    """
    if os.environ.get("TOOLCALL_GRPC_TUNING", "").strip().lower() in OFF_VALUES:
        return False
    if "grpc" not in sys.modules:
        os.environ.setdefault("GRPC_EXPERIMENTS", EXPERIMENTS)
    return in_effect()


def in_effect() -> bool:
    """True when gRPC was (or will be) loaded with toolcall's settings."""
    return os.environ.get("GRPC_EXPERIMENTS") == EXPERIMENTS
