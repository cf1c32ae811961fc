"""``toolcall subscribe``: print a session's async tool results as JSON lines."""

from __future__ import annotations

import argparse
import json

from google.protobuf import json_format

from toolcall import config
from toolcall.clients import channel
from toolcall.v1 import llm_pb2, llm_pb2_grpc


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


async def main(args: argparse.Namespace) -> int:
    seen = 0
    async with channel(args.target) as ch:
        stub = llm_pb2_grpc.LLMServiceStub(ch)
        request = llm_pb2.SubscribeRequest(session_id=args.session, auto_ack=args.ack)
        async for item in stub.Subscribe(request):
            print(json.dumps(json_format.MessageToDict(item.task), ensure_ascii=False), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0
