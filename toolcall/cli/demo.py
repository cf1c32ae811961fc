"""``toolcall demo``: start the stack and run a scripted conversation.

It shows, with the offline stand-in provider (no key, no network): the tools
visible to a role, a sync tool call, an async tool call acknowledged at once
with its result arriving later on the subscription stream, a long job
reporting progress before its result, a tool error
handled gracefully, and a tool of an MCP server mounted as a plugin. Then the
stack stays up until Ctrl-C, unless ``--exit-after-demo``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import uuid
from pathlib import Path

from toolcall import config
from toolcall.cli.chat import EventPrinter
from toolcall.cli.stack import add_arguments as add_stack_arguments
from toolcall.cli.stack import metrics_lines, stack_from_args, stop_requested
from toolcall.clients import channel, list_all_tools
from toolcall.jsonvalue import value_to_json
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2

SYNC_QUESTION = "What is the weather in Paris?"
ASYNC_QUESTION = "Please ping example.org"
LONG_JOB_QUESTION = "Please scan the ports of example.org"
ERROR_QUESTION = "What is the weather forecast for Atlantis?"
MCP_QUESTION = "Please add a note: 'call Alice at 5'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stack_arguments(parser)
    parser.add_argument(
        "--exit-after-demo",
        action="store_true",
        help="stop the stack when the conversation is done instead of waiting for Ctrl-C",
    )


def heading(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


async def chat(stub: llm_pb2_grpc.LLMServiceAsyncStub, session: str, text: str) -> None:
    print(f"user> {text}", flush=True)
    request = llm_pb2.ChatRequest(
        session_id=session,
        role=config.DEFAULT_ROLE,
        messages=[llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content=text)],
    )
    show = EventPrinter()
    async for event in stub.ChatStream(llm_pb2.ChatStreamRequest(request=request), timeout=60):
        show(event)


async def run_script(registry_address: str, llm_address: str) -> None:
    session = f"demo-{uuid.uuid4().hex[:6]}"
    async with channel(registry_address) as rch, channel(llm_address) as lch:
        registry = registry_pb2_grpc.ToolRegistryStub(rch)
        llm = llm_pb2_grpc.LLMServiceStub(lch)

        heading(f"1. Tools visible to role '{config.DEFAULT_ROLE}' (ToolRegistry.List)")
        listing, _ = await list_all_tools(
            registry, registry_pb2.ListRequest(role=config.DEFAULT_ROLE)
        )
        for t in listing:
            mode = "async" if t.tool.mode == tools_pb2.TOOL_MODE_ASYNC else "sync"
            print(f"  {t.tool.name:<14} {mode:<5} {t.tool.source:<24} {t.tool.description}")

        # Subscribe before the async call so the push is seen live.
        subscription = llm.Subscribe(llm_pb2.SubscribeRequest(session_id=session, auto_ack=True))

        heading("2. A sync tool call")
        await chat(llm, session, SYNC_QUESTION)

        heading("3. An async tool call: acknowledged now, result pushed later")
        await chat(llm, session, ASYNC_QUESTION)
        print("  (waiting for the result on LLMService.Subscribe ...)", flush=True)
        pushed = await asyncio.wait_for(subscription.read(), timeout=30)
        assert isinstance(pushed, llm_pb2.SubscribeResponse)
        task = pushed.task
        print(
            f"  pushed: task {task.task_id} ({task.tool_name}) "
            f"{llm_pb2.TaskStatus.Name(task.status)}: {value_to_json(task.result.output)}"
        )
        subscription.cancel()

        heading("3b. A long job: accepted, progress reported, result pushed later")
        watch = llm.Subscribe(
            llm_pb2.SubscribeRequest(session_id=session, auto_ack=True, progress=True)
        )
        await chat(llm, session, LONG_JOB_QUESTION)
        while True:
            item = await asyncio.wait_for(watch.read(), timeout=30)
            assert isinstance(item, llm_pb2.SubscribeResponse)
            if item.HasField("progress"):
                p = item.progress
                shown = (
                    f"{p.progress.fraction:.0%} {p.progress.message}"
                    if p.HasField("progress")
                    else f"accepted as job {p.job_id}"
                )
                print(f"  progress: task {p.task_id} ({p.tool_name}) {shown}", flush=True)
                continue
            task = item.task
            print(
                f"  pushed: task {task.task_id} ({task.tool_name}) "
                f"{llm_pb2.TaskStatus.Name(task.status)}: {value_to_json(task.result.output)}"
            )
            break
        watch.cancel()

        heading("4. A tool error, handled gracefully")
        await chat(llm, session, ERROR_QUESTION)

        heading("5. A tool of a mounted MCP server (toolcall mcp mount, source mcp:notes)")
        await chat(llm, session, MCP_QUESTION)

        heading("6. The conversation so far is stored (LLMService.GetHistory)")
        history = await llm.GetHistory(llm_pb2.GetHistoryRequest(session_id=session))
        print(f"  session {session}: {len(history.messages)} messages kept in SQLite")


def try_next(registry_address: str, llm_address: str, argv0: str) -> str:
    """Commands to try from another terminal, as typed there: ``make run`` runs
    ``.venv/bin/toolcall``, which a shell without the venv active does not find
    as ``toolcall``; and addresses other than the defaults must be named."""
    program = "toolcall"
    if Path(argv0).name == "toolcall" and "/" in argv0:
        found = shutil.which("toolcall")
        if not Path(argv0).is_absolute() or found is None or Path(found) != Path(argv0):
            program = argv0
    registry = (
        ""
        if registry_address == config.DEFAULT_REGISTRY_ADDRESS
        else f" --registry {registry_address}"
    )
    llm = "" if llm_address == config.DEFAULT_LLM_ADDRESS else f" --llm {llm_address}"
    return (
        f"The stack stays up: try `{program} tools list{registry}` or "
        f"`{program} chat{llm} 'What is the weather in Tokyo?'`."
    )


async def main(args: argparse.Namespace) -> int:
    stack = stack_from_args(args)
    print("Starting registry, LLMService (offline stand-in provider) and example plugins ...")
    try:
        await stack.start()
        print(f"  registry {stack.registry_address}, llm {stack.llm_address}, logs {stack.log_dir}")
        if stack.metrics:
            print("  Prometheus metrics (docs/observability.md):")
            print("\n".join(metrics_lines(stack)))
        await run_script(stack.registry_address, stack.llm_address)
        heading("Demo complete")
        if not args.exit_after_demo:
            stop = stop_requested()
            print(try_next(stack.registry_address, stack.llm_address, sys.argv[0]))
            if stack.gateway_address:
                print(f"Or open the web console: http://{stack.gateway_address}/")
            print("Ctrl-C stops it.", flush=True)
            await stop.wait()
    except (RuntimeError, TimeoutError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    finally:
        print("Stopping the stack ...", flush=True)
        stack.stop()
        print("Stopped.")
    return 0
