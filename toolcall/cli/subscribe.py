"""``toolcall subscribe``: print a session's async tool results as JSON lines.

Each line is the task as grpcurl and the docs write it: snake_case field
names, and whole numbers as integers (protobuf stores every JSON number in a
tool's output as a double, so ``json_format`` alone would print ``4.0``).
A long job's progress is printed too, as the running task (its ``status``
``TASK_STATUS_RUNNING``, its latest ``progress``), unless ``--no-progress``;
``--count`` counts results only.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from google.protobuf import json_format

from toolcall import config
from toolcall.clients import auth_metadata, channel
from toolcall.jsonvalue import sorted_keys
from toolcall.v1 import llm_pb2, llm_pb2_grpc

# The service this command talks to (named when an address serves another one).
SERVICE = "toolcall.v1.LLMService"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--session", required=True, help="session id")
    parser.add_argument(
        "--llm",
        dest="target",
        default=config.llm_address(),
        help="LLMService address (default: $TOOLCALL_LLM_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--ack", action="store_true", help="acknowledge results so they are not sent again"
    )
    parser.add_argument("--count", type=int, default=0, help="exit after N results (0: never)")
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="print results only, not long jobs' progress",
    )


async def main(args: argparse.Namespace) -> int:
    seen = 0
    async with channel(args.target) as ch:
        stub = llm_pb2_grpc.LLMServiceStub(ch)
        request = llm_pb2.SubscribeRequest(
            session_id=args.session, auto_ack=args.ack, progress=args.progress
        )
        async for item in stub.Subscribe(request, metadata=auth_metadata()):
            progress = item.HasField("progress")
            shown = item.progress if progress else item.task
            task = json_format.MessageToDict(shown, preserving_proto_field_name=True)
            # The tool's values (Structs) in a stable order; the task's own fields
            # stay in proto order, as grpcurl prints them.
            for part in (task, task.get("result", {})):
                for key in ("arguments", "output"):
                    if key in part:
                        part[key] = sorted_keys(part[key])
            print(json.dumps(whole_numbers(task), ensure_ascii=False), flush=True)
            if progress:
                continue
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


def whole_numbers(obj: Any) -> Any:
    """``obj`` with every integral float (below 2**53, exact in a double) as an int."""
    if isinstance(obj, float):
        return int(obj) if obj.is_integer() and abs(obj) < 2**53 else obj
    if isinstance(obj, dict):
        return {k: whole_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [whole_numbers(v) for v in obj]
    return obj
