"""Per-tool call statistics of the registry, shown by ``List`` and ``Watch``.

They count the calls made through the registry's ``Invoke`` only: the
LLMService calls plugins directly (one hop), so its calls never pass here.
One ``ToolStats`` per tool name (shared by its roles); ``Registry`` drops it
once no role has the tool, so the table is bounded by the registered tools.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ToolStats:
    calls: int = 0
    errors: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    last_error: str = ""

    def record(self, latency_ms: float, error: str | None) -> None:
        self.calls += 1
        self.total_ms += latency_ms
        self.max_ms = max(self.max_ms, latency_ms)
        if error is not None:
            self.errors += 1
            self.last_error = error

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0
