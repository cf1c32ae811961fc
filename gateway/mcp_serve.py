"""Placeholder: filled in by the MCP work (issue 13)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


async def main(args: argparse.Namespace) -> int:
    raise SystemExit("not implemented yet")
