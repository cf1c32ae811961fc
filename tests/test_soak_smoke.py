"""The load test, short: ``python -m tests.soak --duration 5`` must hold with no errors.

Runs the real stack (separate processes, loopback only) under 8 concurrent
chat sessions for 5 seconds; every turn must call its tool, and every async
result must be delivered exactly once. Figures of longer runs are in
docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.plugins import REPO_ROOT, child_env


def test_soak_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.soak", "--duration", "5", "--concurrency", "8", "--json"],
        cwd=REPO_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no report (exit {proc.returncode}): {proc.stderr[-2000:]}"
    report = json.loads(lines[-1])
    assert report["errors"] == 0, report["first_errors"]
    assert report["chats"] > 0 and report["sync_chats"] > 0 and report["async_chats"] > 0
    assert report["async_expected"] == report["async_chats"] > 0
    assert report["async_delivered"] == report["async_expected"]
    assert report["duplicates"] == 0
    assert report["ok"] and proc.returncode == 0, report
