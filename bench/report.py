"""The printed table and the JSON document of a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COLUMNS = ("scenario", "p50 µs", "p99 µs", "seq calls/s", "c64 calls/s", "p50/A", "c64/A")


def _ratio(value: float | None, base: float | None) -> str:
    if not value or not base:
        return "-"
    return f"{value / base:.2f}"


def _rows(
    scenarios: Mapping[str, Mapping[str, float]], titles: Mapping[str, str]
) -> list[tuple[str, ...]]:
    base = scenarios.get("A", {})
    rows: list[tuple[str, ...]] = []
    for key, fig in scenarios.items():
        if "p50_us" not in fig:
            continue
        rows.append(
            (
                f"{key}  {titles.get(key, '')}",
                f"{fig['p50_us']:.0f}",
                f"{fig['p99_us']:.0f}",
                f"{fig['seq_per_s']:.0f}",
                f"{fig['c64_per_s']:.0f}",
                _ratio(fig["p50_us"], base.get("p50_us")),
                _ratio(fig["c64_per_s"], base.get("c64_per_s")),
            )
        )
    return rows


def table(scenarios: Mapping[str, Mapping[str, float]], titles: Mapping[str, str]) -> str:
    """The timed scenarios side by side; empty when only G ran."""
    rows = _rows(scenarios, titles)
    if not rows:
        return ""
    rows.insert(0, COLUMNS)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        numbers = zip(row[1:], widths[1:], strict=True)
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in numbers]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(scenarios: Mapping[str, Mapping[str, float]], titles: Mapping[str, str]) -> str:
    """The same table in Markdown (for docs/performance.md)."""
    rows = _rows(scenarios, titles)
    if not rows:
        return ""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---" + "|--:" * (len(COLUMNS) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def extras(scenarios: Mapping[str, Mapping[str, float]]) -> str:
    """Figures beyond the table's columns (F's overhead, every G figure)."""
    lines = []
    for key, fig in scenarios.items():
        more = {
            k: v for k, v in fig.items() if k not in ("p50_us", "p99_us", "seq_per_s", "c64_per_s")
        }
        for name, value in more.items():
            lines.append(f"{key}.{name} = {value:g}")
    return "\n".join(lines)


def verdicts(targets: Mapping[str, Mapping[str, Any]]) -> str:
    lines = []
    for name, result in targets.items():
        lines.append(f"{result['status'].upper():7}  {name}  ({result['detail']})")
    return "\n".join(lines)


def cpu(per_scenario: Mapping[str, Mapping[str, float]], machine: Mapping[str, float]) -> str:
    """CPU µs per call of each process on a path, and how busy the machine was meanwhile."""
    lines = []
    for key, fig in per_scenario.items():
        processes = "  ".join(
            f"{name.removesuffix('_us')} {value:.0f}"
            for name, value in fig.items()
            if name.endswith("_us")
        )
        total = sum(v for n, v in fig.items() if n.endswith("_us"))
        share = f"machine busy {fig.get('busy_pct', 0):g}%, steal {fig.get('steal_pct', 0):g}%"
        lines.append(f"{key}: CPU µs/call {processes}  (total {total:.0f}; {share})")
    if machine:
        lines.append(
            f"whole run: machine busy {machine.get('busy_pct', 0):g}%, "
            f"steal {machine.get('steal_pct', 0):g}%, load (1 min) "
            f"{machine.get('load_1m_before', 0):g} -> {machine.get('load_1m_after', 0):g}"
        )
    return "\n".join(lines)
