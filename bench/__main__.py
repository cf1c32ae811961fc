"""``python -m bench``: run the scenarios, print the table, write the JSON results.

python -m bench                      # everything, 2000 calls x 3 rounds
python -m bench --only A,B,D --calls 5000
python -m bench --quick --only A,B   # tiny counts (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from toolcall import grpc_env

# Before bench's modules load grpc: this process and the servers it starts
# (they inherit the variable) run with toolcall's gRPC settings.
grpc_env.apply()

from bench import machine, report  # noqa: E402
from bench.runner import SCENARIOS, Settings, run  # noqa: E402
from bench.targets import check_all  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are their medians")
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}"
    )
    parser.add_argument("--quick", action="store_true", help="tiny counts, for a smoke test")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results file")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.only.split(",") if k.strip()] or list(SCENARIOS)
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    args.keys = keys
    if args.quick:
        args.calls, args.rounds = min(args.calls, 50), 1
    if args.calls < 1 or args.rounds < 1:
        parser.error("--calls and --rounds must be at least 1")
    return args


def derive(figures: dict[str, dict[str, float]]) -> None:
    """F's orchestration overhead: a Chat turn minus one direct dispatch minus the provider."""
    f, b = figures.get("F"), figures.get("B")
    if f is not None and b is not None and "provider_us" in f:
        f["overhead_us"] = round(f["p50_us"] - b["p50_us"] - f["provider_us"], 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = Settings(
        calls=args.calls,
        rounds=args.rounds,
        warmup=max(10, args.calls // 10),
        quick=args.quick,
    )
    # Every client runs here, on asyncio's own loop: the HTTP and MCP clients
    # (D, E) measured slower on uvloop, and B's dispatcher only loses by it.
    outcome = asyncio.run(run(args.keys, settings))
    figures, failed = outcome.figures, outcome.failed
    derive(figures)
    targets = check_all(figures)
    document: dict[str, Any] = {
        "machine": machine.describe(),
        "settings": {"calls": settings.calls, "rounds": settings.rounds, "concurrency": 64},
        "scenarios": figures,
        "targets": targets,
        "failed": failed,
        # Each round's figures, to judge how steady the medians are.
        "rounds": outcome.rounds,
        # CPU per call of each process on the path (bench/cpu.py): steadier than wall clock.
        "cpu": outcome.cpu,
        "machine_during_run": outcome.machine_during_run,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    titles = {k: s.title for k, s in SCENARIOS.items()}
    sections = [
        report.table(figures, titles),
        report.extras(figures),
        report.cpu(outcome.cpu, outcome.machine_during_run),
    ]
    if args.markdown:
        sections.append(report.markdown(figures, titles))
    for section in sections:
        if section:
            print(section, end="\n\n")
    print(report.verdicts(targets))
    for key, reason in failed.items():
        print(f"FAILED   scenario {key}: {reason.splitlines()[0]}")
    print(f"\nwritten to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
