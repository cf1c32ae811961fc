"""gRPC core settings for toolcall's processes, applied by their entry points.

grpcio 1.85 reads and writes every connection on its EventEngine thread pool,
which hands each completion to grpc.aio's poller thread, which hands it on to
the event loop. With EventEngine's client, listener and endpoints switched off
(the iomgr poller, gRPC's long-standing Linux path), the poller thread reads
the socket itself and one thread hand-off per completion disappears. Measured
on our 2-core VM with a bare echo server: 8.2 → 4.8 thread switches and
~360 → ~285 µs of server CPU per unary call (docs/performance.md).

gRPC reads ``GRPC_EXPERIMENTS`` once, when ``grpc`` is first imported, so only
a program's entry point can set it: the ``toolcall`` command (before it loads
grpc) and ``Plugin.run()`` (plugin_stub loads grpc only once a plugin starts)
call ``apply()``; importing a toolcall package changes nothing. A process that
loaded grpc before ``apply()`` keeps gRPC's defaults, and its entry point
logs one WARNING (``TOO_LATE``) saying so. Child processes inherit the
variable. A ``GRPC_EXPERIMENTS`` already set is the operator's choice and is
left alone; ``TOOLCALL_GRPC_TUNING=off`` turns this off.
"""

from __future__ import annotations

import os
import sys

EXPERIMENTS = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
OFF_VALUES = frozenset({"0", "off", "false", "no"})

TOO_LATE = (
    "grpc was imported before toolcall could apply its gRPC settings, so this process "
    "runs on gRPC's defaults (about 1.3x the CPU per call): import grpc after plugin_stub, "
    f"or start the process with GRPC_EXPERIMENTS={EXPERIMENTS} "
    "(TOOLCALL_GRPC_TUNING=off silences this)"
)


def apply() -> bool:
    """Sets ``GRPC_EXPERIMENTS`` unless it is set, turned off, or too late.

    Returns True when this process runs with toolcall's settings; ``missed()``
    tells the caller when it should log ``TOO_LATE``.
    """
    if turned_off() or "GRPC_EXPERIMENTS" in os.environ:
        return in_effect()
    if "grpc" in sys.modules:
        return False
    os.environ["GRPC_EXPERIMENTS"] = EXPERIMENTS
    return True


def turned_off() -> bool:
    return os.environ.get("TOOLCALL_GRPC_TUNING", "").strip().lower() in OFF_VALUES


def missed() -> bool:
    """True when toolcall's settings were wanted but grpc was loaded without them."""
    return not turned_off() and "GRPC_EXPERIMENTS" not in os.environ and "grpc" in sys.modules


def in_effect() -> bool:
    """True when gRPC was (or will be) loaded with toolcall's settings."""
    return not turned_off() and os.environ.get("GRPC_EXPERIMENTS") == EXPERIMENTS
