"""``toolcall mcp serve|mount``: the MCP edge, both ways.

Each direction (``gateway.mcp_serve``, ``gateway.mcp_mount``) provides
``add_arguments(parser)`` and ``async main(args) -> int``, like every other
subcommand; only the chosen one is imported.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

DIRECTIONS = {
    "serve": ("gateway.mcp_serve", "serve the registry's tools to MCP hosts (stdio or HTTP)"),
    "mount": ("gateway.mcp_mount", "register an MCP server's tools as a toolcall plugin"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="direction", required=True, metavar="DIRECTION")
    for name, (module, help_text) in DIRECTIONS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(direction_module=module)


async def main(args: argparse.Namespace) -> int:
    module: Any = importlib.import_module(args.direction_module)
    return int(await module.main(args) or 0)
