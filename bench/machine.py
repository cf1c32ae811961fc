"""What the numbers were measured on."""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from toolcall import eventloop

PACKAGES = ("grpcio", "protobuf", "jsonschema", "uvloop", "fastapi", "uvicorn", "httpx", "mcp")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        # Other work on the machine skews the figures, calls/s at 64 in flight most.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "packages": {p: _version(p) for p in PACKAGES},
        # The clients (the bench process) and D's and E's servers run on asyncio's
        # loop; our services, SDK plugins and A-tuned on this one (toolcall.eventloop).
        "toolcall_event_loop": eventloop.name(),
        # gRPC core settings of the bench process and of every server but A's (toolcall.grpc_env).
        "grpc_experiments": os.environ.get("GRPC_EXPERIMENTS", ""),
    }
