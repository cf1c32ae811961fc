"""The ``toolcall`` command: serve the services, run the stack, talk to it.

``main`` is the entry point. It applies toolcall's gRPC settings before
anything loads grpc (gRPC reads them once, at import: toolcall/grpc_env.py),
so this module imports nothing that does; the commands live in
``toolcall.cli.commands``.
"""

from __future__ import annotations

from toolcall import grpc_env


def main(argv: list[str] | None = None) -> int:
    grpc_env.apply()
    from toolcall.cli.commands import main as run

    return run(argv)
