"""The security bench scenarios run end to end: B-mtls (B over the remote-plugin mTLS
path) and C-token (C with a principals file), beside their plaintext twins.

Speed itself is measured by ``make bench`` (docs/security.md), not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_b_mtls_and_c_token_run_and_are_judged_against_their_targets(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    args = ["--quick", "--only", "B,B-mtls,C,C-token", "--calls", "10", "--output", str(output)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(output.read_text())
    if "B-mtls" in doc["failed"] and "non-loopback" in str(doc["failed"]["B-mtls"]):
        doc["failed"].pop("B-mtls")  # a machine without a non-loopback address
    assert doc["failed"] == {}
    assert doc["targets"]["C-token p50 ≤ 1.05 × C p50"]["status"] in ("pass", "fail")
    assert "B-mtls" in proc.stdout and "C-token" in proc.stdout
