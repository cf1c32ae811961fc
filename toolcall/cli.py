"""The ``toolcall`` command: serve the services, run the stack, talk to it.

Exit codes: 0 success, 1 the call failed (error printed in one line),
2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys

from toolcall.serving import setup_logging

# Subcommand -> module providing ``add_arguments(parser)`` and ``async main(args) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "registry": ("registry_service.main", "serve the ToolRegistry service"),
    "llm": ("llm_service.main", "serve the LLMService"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolcall", description="Typed, fast, safe tool calling for LLM applications."
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    module = importlib.import_module(args.module)
    try:
        return int(asyncio.run(module.main(args)) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
