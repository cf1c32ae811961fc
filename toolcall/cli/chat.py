"""``toolcall chat``: one chat turn, streamed, with tool calls shown as they happen."""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import TextIO

from toolcall import config
from toolcall.clients import auth_metadata, channel
from toolcall.jsonvalue import value_to_json
from toolcall.parts import placeholder
from toolcall.v1 import llm_pb2, llm_pb2_grpc

# The service this command talks to (named when an address serves another one).
SERVICE = "toolcall.v1.LLMService"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("message", help="what the user says")
    parser.add_argument(
        "--llm",
        dest="target",
        default=config.llm_address(),
        help="LLMService address (default: $TOOLCALL_LLM_ADDRESS or %(default)s)",
    )
    parser.add_argument("--session", default="", help="session id (default: a new one)")
    parser.add_argument("--role", default="", help="role (persona) of the conversation")
    parser.add_argument("--provider", default="", help="offline, openai or gemini")
    parser.add_argument("--model", default="", help="model name for the provider")


class EventPrinter:
    """Human-readable rendering of ChatStream events (shared with the demo).

    Tool calls get a line each as they happen; the model's text is written as
    it streams, after an ``assistant>`` prompt.
    """

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.in_text = False

    def __call__(self, event: llm_pb2.ChatStreamResponse) -> None:
        kind = event.WhichOneof("event")
        out = self.out
        if kind == "text_delta":
            if not self.in_text:
                out.write("assistant> ")
                self.in_text = True
            out.write(event.text_delta.text)
        elif kind == "tool_call_started":
            call = event.tool_call_started.call
            self._end_text()
            out.write(f"  -> {call.name}({call.raw_arguments or '{}'})  [{call.call_id}]\n")
        elif kind == "tool_call_finished":
            rec = event.tool_call_finished.record
            if rec.result.is_error:
                status = f"error: {rec.result.error}"
            elif rec.task_id:
                status = f"accepted as task {rec.task_id}"
            else:
                status = value_to_json(rec.result.output)
            for part in rec.result.parts:  # named, never printed as bytes
                status += f" + {placeholder(part)}"
            self._end_text()
            out.write(f"  <- {rec.call.name}: {status}  ({rec.latency_ms:.1f} ms)\n")
        elif kind == "final":
            self._end_text()
        out.flush()

    def _end_text(self) -> None:
        if self.in_text:
            self.out.write("\n")
            self.in_text = False


async def main(args: argparse.Namespace) -> int:
    session = args.session or f"cli-{uuid.uuid4().hex[:8]}"
    request = llm_pb2.ChatRequest(
        session_id=session,
        role=args.role,
        messages=[llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content=args.message)],
        provider=args.provider,
        model=args.model,
    )
    async with channel(args.target) as ch:
        stub = llm_pb2_grpc.LLMServiceStub(ch)
        print(f"[session {session}]", file=sys.stderr)
        show = EventPrinter()
        async for event in stub.ChatStream(
            llm_pb2.ChatStreamRequest(request=request), metadata=auth_metadata()
        ):
            show(event)
    return 0
