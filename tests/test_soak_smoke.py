"""The load test, short: ``python -m tests.soak --duration 5`` must hold with no errors
(and ``--hostile``, with hostile clients mixed in).

Runs the real stack (separate processes, loopback only) under 8 concurrent
chat sessions for 5 seconds; every turn must call its tool, and every async
result must be delivered exactly once. Figures of longer runs are in
docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.support.plugins import REPO_ROOT, child_env


def soak(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.soak", *args, "--json"],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no report (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return proc, json.loads(lines[-1])


def test_soak_smoke() -> None:
    proc, report = soak("--duration", "5", "--concurrency", "8")
    assert report["errors"] == 0, report["first_errors"]
    assert report["chats"] > 0 and report["sync_chats"] > 0 and report["async_chats"] > 0
    assert report["async_expected"] == report["async_chats"] > 0
    assert report["async_delivered"] == report["async_expected"]
    assert report["duplicates"] == 0
    assert report["ok"] and proc.returncode == 0, report


def test_hostile_soak_smoke() -> None:
    """Hostile clients in the second half: each gets its documented status, and
    the normal chats lose nothing (no errors, every async result, no lease expiry)."""
    proc, report = soak("--duration", "8", "--concurrency", "4", "--hostile")
    assert report["errors"] == 0, report["first_errors"]
    hostile = report["hostile"]
    kinds = {key.split(":")[0] for key in hostile["statuses"]}
    assert {"over_grpc_limit", "malformed", "bad_model", "deep_arguments"} <= kinds, hostile
    assert hostile["lease_expiries"] == 0 and hostile["slow_subscriber_lost"] == 0
    assert hostile["sync_clean_chats"] > 0 and hostile["sync_hostile_chats"] > 0
    assert report["async_delivered"] == report["async_expected"] > 0
    assert report["ok"] and proc.returncode == 0, report
