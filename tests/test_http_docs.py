"""docs/http.md's curl examples, run against a live stack: the docs cannot drift from the code.

Every ``sh`` block is run (the gateway's and the plugin's ports put in) and
its output compared with the ``json`` block under it: the keys shown must be
in the answer (for an event stream, in one of its events).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import GatewayProcess
from tests.support.llm_env import llm_env, tool_plugin
from tests.support.plugins import REPO_ROOT, ChildProcess, child_env, free_port

__all__ = ["tool_plugin"]  # the fixture, imported for pytest

DOC = REPO_ROOT / "docs" / "http.md"
BLOCK = re.compile(r"```sh\n(.*?)\n```\n\n```json\n(.*?)\n```", re.S)
CURL = shutil.which("curl")


def examples() -> list[tuple[str, str]]:
    return BLOCK.findall(DOC.read_text())


def test_the_doc_has_examples_of_both_apis_and_every_streaming_kind() -> None:
    text = "\n".join(cmd for cmd, _ in examples())
    for needle in ["/api/tools/register", "/api/tools?", "/v1/toolcall.v1.ToolRegistry/Invoke",
                   "/v1/toolcall.v1.LLMService/Chat ", "ChatStream", "Watch"]:  # fmt: skip
        assert needle in text, needle


def answers(out: str) -> list[Any]:
    """The JSON of a plain answer, or of each ``data:`` line of an event stream."""
    if out.lstrip().startswith(("data:", "event:", ":")):
        return [json.loads(line[5:]) for line in out.splitlines() if line.startswith("data:")]
    return [json.loads(out)]


@pytest.fixture
async def ports(tmp_path: Path, tool_plugin: str) -> AsyncIterator[dict[str, int]]:
    async with llm_env(tmp_path, tool_plugin) as env:
        with GatewayProcess(
            env.registry.target, tmp_path, TOOLCALL_LLM_ADDRESS=env.llm.target
        ) as gateway:
            await gateway.healthy()
            port = free_port()
            argv = [sys.executable, str(REPO_ROOT / "tests/support/http_seed_plugin.py")]
            argv += [gateway.url, "my_plugin", str(port)]
            with ChildProcess(argv, tmp_path / "plugin.log", child_env()) as plugin:
                for _ in range(400):
                    if "READY" in plugin.log():
                        break
                    await asyncio.sleep(0.05)
                assert await env.llm.view.wait_for("default", "get_weather", timeout_s=10)
                yield {"48913": gateway.port, "9876": port}
                await asyncio.to_thread(plugin.stop)


@pytest.mark.anyio
async def test_every_curl_example_of_docs_http_md_answers_as_shown(
    ports: dict[str, int],
) -> None:
    assert CURL is not None, "curl is needed to run the examples of docs/http.md"
    for command, shown in examples():
        for placeholder, port in ports.items():
            command = command.replace(f"127.0.0.1:{placeholder}", f"127.0.0.1:{port}")
        proc = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        timed_out = proc.returncode == 28 and "--max-time" in command
        assert proc.returncode == 0 or timed_out, f"{command}\n{err.decode()}"
        got = answers(out.decode())
        want = set(json.loads(shown))
        assert got and any(want <= set(a) for a in got), f"{command}\nshown {want}, got {got}"
