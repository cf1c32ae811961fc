"""A ToolCallback server for the LLMService tests, written on grpc.aio directly.

Usage: ``python llm_tool_plugin.py <listen address>``; prints ``READY`` once
serving. What a call does depends on the tool name's first word (before
``_``), so tests can register many tools against one process:

- ``echo``:  returns the arguments, raw arguments, call id, session and role
- ``sleep``: sleeps ``arguments.seconds`` (default 0.5), returns ``{"slept": s}``
- ``big``:   returns ``{"pad": "x" * arguments.bytes}``
- ``fail``:  a tool-level error (is_error) "boom"
- ``refuse``: is_error "CITY_NOT_FOUND" with an output saying what would do:
  ``{"city": arguments.city, "did_you_mean": ["Paris"]}``
- ``crash``: a gRPC INTERNAL status
- ``nan``:   returns a NaN number (protobuf carries it; JSON cannot)
- ``deep``:  returns ``arguments.levels`` nested lists (default 60: past protobuf's
  decoding limit of 100 messages)
- ``trace``: returns the ``traceparent`` the call came with (``""``: none), as
  a plugin written with the generated stubs only sees it
- ``picture``: a chart as an image part (PNG) beside ``{"points": 3}``
- ``image``: returns ``{"chart": "weekly"}`` with three content parts: the text
  "a weekly chart", the PNG ``tests.support.images.png(2, 2)`` (or, with
  ``arguments.noise`` set, an incompressible one of that many pixels a side),
  and a file reference ``file:///tmp/chart.csv``
- ``accept``: answers "accepted" (job ``j1``) whether or not the call offered a job
- ``chat``:  calls LLMService.Chat at ``arguments.address`` for ``arguments.session``
  (default: its own session); returns ``{"code", "details"|"answer"}``
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import signal
import sys
import time
from pathlib import Path

import grpc
from google.protobuf import struct_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: tests.support

from tests.support.images import png
from toolcall.jsonvalue import from_struct, to_value
from toolcall.v1 import callback_pb2, callback_pb2_grpc, llm_pb2, llm_pb2_grpc, tools_pb2


class Tools(callback_pb2_grpc.ToolCallbackServicer):
    async def Invoke(
        self, request: callback_pb2.ToolCallbackInvokeRequest, context: grpc.aio.ServicerContext
    ) -> callback_pb2.ToolCallbackInvokeResponse:
        kind = re.split(r"[_.]", request.name)[0]
        args = from_struct(request.arguments)
        if kind == "echo":
            out = {
                "arguments": args,
                "raw_arguments": request.raw_arguments,
                "call_id": request.call_id,
                "session_id": request.session_id,
                "role": request.role,
            }
            return callback_pb2.ToolCallbackInvokeResponse(output=to_value(out))
        if kind == "trace":
            sent = dict(context.invocation_metadata() or ())
            out = {"traceparent": sent.get("traceparent", "")}
            return callback_pb2.ToolCallbackInvokeResponse(output=to_value(out))
        if kind == "sleep":
            seconds = float(args.get("seconds", 0.5))
            started = time.monotonic()
            await asyncio.sleep(seconds)
            out = {"slept": seconds, "started": started}
            return callback_pb2.ToolCallbackInvokeResponse(output=to_value(out))
        if kind == "accept":
            return callback_pb2.ToolCallbackInvokeResponse(
                accepted=tools_pb2.JobAccepted(job_id="j1")
            )
        if kind == "big":
            out = {"pad": "x" * int(args.get("bytes", 1000))}
            return callback_pb2.ToolCallbackInvokeResponse(output=to_value(out))
        if kind == "nan":
            return callback_pb2.ToolCallbackInvokeResponse(
                output=struct_pb2.Value(number_value=math.nan)
            )
        if kind == "deep":
            # Built in place: append() copies by parsing, which has the limit too.
            reply = callback_pb2.ToolCallbackInvokeResponse()
            value = reply.output
            for _ in range(int(args.get("levels", 60))):
                value = value.list_value.values.add()
            value.string_value = "x"
            return reply
        if kind == "image":
            side = int(args.get("noise", 0))
            data = png(side, side, noise=True) if side else png(2, 2)
            parts = [
                tools_pb2.ContentPart(text="a weekly chart"),
                tools_pb2.ContentPart(image=tools_pb2.ImagePart(mime_type="image/png", data=data)),
                tools_pb2.ContentPart(
                    resource=tools_pb2.ResourcePart(
                        uri="file:///tmp/chart.csv", mime_type="text/csv", name="chart.csv"
                    )
                ),
            ]
            return callback_pb2.ToolCallbackInvokeResponse(
                output=to_value({"chart": "weekly"}), parts=parts
            )
        if kind == "chat":
            out = await chat(args["address"], args.get("session") or request.session_id)
            return callback_pb2.ToolCallbackInvokeResponse(output=to_value(out))
        if kind == "fail":
            return callback_pb2.ToolCallbackInvokeResponse(is_error=True, error="boom")
        if kind == "refuse":
            out = {"city": args.get("city", ""), "did_you_mean": ["Paris"]}
            return callback_pb2.ToolCallbackInvokeResponse(
                is_error=True, error="CITY_NOT_FOUND", output=to_value(out)
            )
        if kind == "picture":
            reply = callback_pb2.ToolCallbackInvokeResponse(output=to_value({"points": 3}))
            reply.parts.add().image.CopyFrom(
                tools_pb2.ImagePart(mime_type="image/png", data=png(48, 32, noise=True))
            )
            return reply
        if kind == "crash":
            await context.abort(grpc.StatusCode.INTERNAL, "plugin crashed")
        return callback_pb2.ToolCallbackInvokeResponse(
            is_error=True, error=f"no behaviour for {request.name}: {json.dumps(args)}"
        )


async def chat(address: str, session_id: str) -> dict[str, str]:
    message = llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content="from a tool")
    async with grpc.aio.insecure_channel(address) as ch:
        stub = llm_pb2_grpc.LLMServiceStub(ch)
        try:
            reply = await stub.Chat(
                llm_pb2.ChatRequest(session_id=session_id, messages=[message]), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            return {"code": exc.code().name, "details": exc.details() or ""}
    return {"code": "OK", "answer": reply.message.content}


async def main(address: str) -> None:
    server = grpc.aio.server()
    callback_pb2_grpc.add_ToolCallbackServicer_to_server(Tools(), server)
    server.add_insecure_port(address)
    await server.start()
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
