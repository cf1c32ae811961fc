"""``python -m bench`` runs end to end and writes results of the documented shape.

Speed itself is measured by the benchmarks, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = {"p50_us", "p99_us", "seq_per_s", "c64_per_s"}


def test_quick_run_writes_results_of_the_documented_shape(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    args = ["--quick", "--only", "A,B", "--calls", "20", "--output", str(output)]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(output.read_text())

    assert set(doc) >= {"machine", "scenarios", "targets"}
    assert set(doc["machine"]) >= {"cpu", "cores", "python", "grpcio", "platform", "date"}
    assert doc["settings"]["calls"] == 20
    assert list(doc["scenarios"]) == ["A", "B"]
    for key, figures in doc["scenarios"].items():
        assert set(figures) == FIGURES, key
        assert all(isinstance(v, float) and v > 0 for v in figures.values()), figures
        assert figures["p50_us"] <= figures["p99_us"]

    assert {k: len(v) for k, v in doc["rounds"].items()} == {"A": 1, "B": 1}

    # CPU per call of each process on the path: the client and the scenario's server(s).
    assert list(doc["cpu"]) == ["A", "B"]
    for cpu in doc["cpu"].values():
        processes = {name for name in cpu if name.endswith("_us")}
        assert "client_us" in processes and len(processes) >= 2, cpu
        assert all(cpu[name] > 0 for name in processes), cpu
        assert 0 <= cpu["steal_pct"] <= 100 and 0 < cpu["busy_pct"] <= 100, cpu
    assert set(doc["machine_during_run"]) >= {"busy_pct", "steal_pct", "load_1m_before"}
    assert "CPU µs/call client" in proc.stdout and "steal" in proc.stdout
    assert doc["failed"] == {}

    targets = doc["targets"]
    ran = targets["B p50 ≤ 1.15 × A p50"]
    assert ran["status"] in ("pass", "fail")
    assert ran["value"] == round(
        doc["scenarios"]["B"]["p50_us"] / doc["scenarios"]["A"]["p50_us"], 3
    )
    assert targets["B p50 ≤ 0.6 × D p50"]["status"] == "skipped"
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout
    assert "B  Dispatcher.invoke" in proc.stdout


def test_unknown_scenario_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "A,Z", "--output", str(tmp_path / "x.json")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "unknown scenario(s) Z" in proc.stderr
    assert not (tmp_path / "x.json").exists()
