"""The speed targets of issue #7, checked on the medians of one run.

A target whose scenarios were not run (``--only``) is reported as skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Figures = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    needs: tuple[tuple[str, str], ...]  # (scenario, figure) pairs the check reads
    value: Callable[[Figures], float]
    limit: float
    at_most: bool  # True: value <= limit passes; False: value >= limit passes
    unit: str = "×"

    def check(self, figures: Figures) -> dict[str, Any]:
        if any(figures.get(s, {}).get(f) is None for s, f in self.needs):
            return {"status": "skipped", "detail": "scenario not run"}
        value = self.value(figures)
        ok = value <= self.limit if self.at_most else value >= self.limit
        sign = "≤" if self.at_most else "≥"
        return {
            "status": "pass" if ok else "fail",
            "value": round(value, 3),
            "limit": self.limit,
            "detail": f"{value:.3f}{self.unit} {sign} {self.limit:g}{self.unit}",
        }


def _ratio(a: str, fa: str, b: str, fb: str) -> Callable[[Figures], float]:
    return lambda f: f[a][fa] / f[b][fb]


def _within(key: str) -> Target:
    return Target(
        f"G {key} p50: 10,000 tools ≤ 1.3 × 10 tools",
        (("G", f"{key}_small_p50_us"), ("G", f"{key}_large_p50_us")),
        _ratio("G", f"{key}_large_p50_us", "G", f"{key}_small_p50_us"),
        1.3,
        at_most=True,
    )


TARGETS: tuple[Target, ...] = (
    Target("B p50 ≤ 1.15 × A p50", (("A", "p50_us"), ("B", "p50_us")),
           _ratio("B", "p50_us", "A", "p50_us"), 1.15, at_most=True),
    Target("B-traced p50 ≤ 1.15 × B p50", (("B", "p50_us"), ("B-traced", "p50_us")),
           _ratio("B-traced", "p50_us", "B", "p50_us"), 1.15, at_most=True),
    Target("B-metrics p50 ≤ 1.03 × B p50", (("B", "p50_us"), ("B-metrics", "p50_us")),
           _ratio("B-metrics", "p50_us", "B", "p50_us"), 1.03, at_most=True),
    Target("B-uds p50 ≤ A p50", (("A", "p50_us"), ("B-uds", "p50_us")),
           _ratio("B-uds", "p50_us", "A", "p50_us"), 1.0, at_most=True),
    Target("B c64 ≥ 0.8 × A c64", (("A", "c64_per_s"), ("B", "c64_per_s")),
           _ratio("B", "c64_per_s", "A", "c64_per_s"), 0.8, at_most=False),
    Target("B p50 ≤ 0.6 × D p50", (("D", "p50_us"), ("B", "p50_us")),
           _ratio("B", "p50_us", "D", "p50_us"), 0.6, at_most=True),
    Target("B p50 ≤ 0.3 × E p50", (("E", "p50_us"), ("B", "p50_us")),
           _ratio("B", "p50_us", "E", "p50_us"), 0.3, at_most=True),
    Target("B c64 ≥ 5 × D c64", (("D", "c64_per_s"), ("B", "c64_per_s")),
           _ratio("B", "c64_per_s", "D", "c64_per_s"), 5.0, at_most=False),
    Target("B-mtls p50 ≤ 1.3 × B p50", (("B", "p50_us"), ("B-mtls", "p50_us")),
           _ratio("B-mtls", "p50_us", "B", "p50_us"), 1.3, at_most=True),
    Target("C-token p50 ≤ 1.05 × C p50", (("C", "p50_us"), ("C-token", "p50_us")),
           _ratio("C-token", "p50_us", "C", "p50_us"), 1.05, at_most=True),
    Target("F overhead ≤ 1.5 ms per tool round", (("F", "overhead_us"),),
           lambda f: f["F"]["overhead_us"] / 1000.0, 1.5, at_most=True, unit=" ms"),
    Target("H p50 ≤ 1.3 × E p50", (("E", "p50_us"), ("H", "p50_us")),
           _ratio("H", "p50_us", "E", "p50_us"), 1.3, at_most=True),
    Target("H c64 ≥ 0.8 × E c64", (("E", "c64_per_s"), ("H", "c64_per_s")),
           _ratio("H", "c64_per_s", "E", "c64_per_s"), 0.8, at_most=False),
    Target("I p50 ≤ 1.3 × E p50", (("E", "p50_us"), ("I", "p50_us")),
           _ratio("I", "p50_us", "E", "p50_us"), 1.3, at_most=True),
    Target("J p50 ≤ 1.0 × D p50", (("D", "p50_us"), ("J", "p50_us")),
           _ratio("J", "p50_us", "D", "p50_us"), 1.0, at_most=True),
    Target("K p50 ≤ 1.3 × D p50", (("D", "p50_us"), ("K", "p50_us")),
           _ratio("K", "p50_us", "D", "p50_us"), 1.3, at_most=True),
    _within("register"),
    _within("invoke"),
    _within("list_role"),
    Target("G registry RSS with 10,000 tools ≤ 150 MB", (("G", "rss_large_mb"),),
           lambda f: f["G"]["rss_large_mb"], 150.0, at_most=True, unit=" MB"),
)  # fmt: skip


def check_all(figures: Figures) -> dict[str, dict[str, Any]]:
    return {t.name: t.check(figures) for t in TARGETS}
