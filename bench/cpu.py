"""CPU time per call of each process on a call path, and the machine's steal and load.

Wall-clock figures move with whatever else runs on the machine; the CPU time
each process spends per call (user + system, from ``/proc/<pid>/stat``) is what
the hot path really costs and barely moves with noise. The bench reads it for
the client (this process) and every server a scenario started (and their
children) around each timed round, and divides by the calls the round made.
Steal (time the hypervisor gave to other guests) and the load average say how
much the wall-clock figures of the run can be trusted. Linux only: elsewhere
the figures are empty.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CLIENT = "client"
_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) so far; None if gone."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return None
    # utime and stime are fields 14 and 15 of stat(5); the list starts at field 3.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def descendants(pids: set[int]) -> set[int]:
    """``pids`` and every live process below them."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(pids), set(pids)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@dataclass(frozen=True, slots=True)
class MachineTimes:
    """The ``cpu`` line of /proc/stat: all cores' time in ticks."""

    total: int = 0
    idle: int = 0
    steal: int = 0

    @classmethod
    def now(cls) -> MachineTimes:
        try:
            first = Path("/proc/stat").read_text().splitlines()[0].split()
        except (OSError, IndexError):
            return cls()
        # user nice system idle iowait irq softirq steal (guest time is inside user)
        ticks = [int(x) for x in first[1:9]]
        return cls(total=sum(ticks), idle=ticks[3] + ticks[4], steal=ticks[7])


def machine_share(before: MachineTimes, after: MachineTimes) -> dict[str, float]:
    """Busy and steal percentages of all cores between two readings."""
    total = after.total - before.total
    if total <= 0:
        return {}
    return {
        "busy_pct": round(100 * (total - (after.idle - before.idle)) / total, 1),
        "steal_pct": round(100 * (after.steal - before.steal) / total, 1),
    }


@dataclass(slots=True)
class CpuMeter:
    """CPU time of the client and of named server processes over one measurement."""

    servers: Mapping[str, int]  # name -> pid
    _start: dict[str, float] = field(default_factory=dict)
    _machine: MachineTimes = field(default_factory=MachineTimes)

    def _read(self) -> dict[str, float]:
        out = {CLIENT: time.process_time()}
        for name, pid in self.servers.items():
            family = descendants({pid})
            seconds = [s for p in family if (s := process_cpu_s(p)) is not None]
            if seconds:
                out[name] = sum(seconds)
        return out

    def start(self) -> None:
        self._machine = MachineTimes.now()
        self._start = self._read()

    def per_call_us(self, calls: int) -> dict[str, float]:
        """``<process>_us``: CPU µs per call since ``start()``; the machine busy/steal %."""
        end, machine = self._read(), MachineTimes.now()
        figures = {
            f"{name}_us": round((end[name] - self._start[name]) * 1e6 / calls, 1)
            for name in end
            if name in self._start and calls > 0
        }
        figures.update(machine_share(self._machine, machine))
        return figures
