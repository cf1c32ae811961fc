"""The web console in a real headless Chromium, against the real stack.

``toolcall up``'s processes (registry, LLMService with the offline provider,
the gateway, the example weather and network plugins) plus a test plugin
process whose ``picture_chart`` tool answers with an image. One browser
session for the module; the steps run in order and each writes a screenshot
to the artifacts directory (tests/artifacts/ or $TOOLCALL_TEST_ARTIFACTS).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from plugin_stub import Job
from tests.support.browser import artifacts_dir, chromium_session, find_browser, wait_until
from tests.support.gateway import GatewayProcess
from tests.support.llm_env import tool_plugin_process
from tests.support.plugins import PluginProcess, free_port
from toolcall.cli.stack import Stack
from toolcall.clients import channel
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2

pytestmark = pytest.mark.slow

PING_DELAY_S = "1.5"  # long enough to see the call running, short for the suite


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    find_browser()  # fail first, with the fix, when there is no browser
    data = tmp_path_factory.mktemp("console-stack")
    s = Stack(
        registry_address=f"127.0.0.1:{free_port()}",
        llm_address=f"127.0.0.1:{free_port()}",
        data_dir=data,
        gateway_address=f"127.0.0.1:{free_port()}",
        mcp_servers=(),  # the example MCP mount adds nothing the console shows differently
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TOOLCALL_PING_DELAY", PING_DELAY_S)
        # A killed plugin's tools go when its lease expires: 2 s, not the default 6.
        env.setenv("TOOLCALL_PLUGIN_LEASE_TTL", "2")
        env.setenv("TOOLCALL_PROVIDER", "offline")
        try:
            asyncio.run(s.start())
            with tool_plugin_process(f"unix:{data / 'picture.sock'}") as address:
                asyncio.run(register_picture_tool(s.registry_address, address))
                yield s
        finally:
            s.stop()


async def register_picture_tool(registry: str, address: str) -> None:
    async with channel(registry) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        tool = tools_pb2.ToolDefinition(
            name="picture_chart",
            description="Draws a chart picture.",
            callback_address=address,
            source="test:picture",
        )
        reply = await stub.Register(registry_pb2.RegisterRequest(tool=tool))
        assert reply.ok, reply


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    yield from chromium_session()


def url(stack: Stack, session: str) -> str:
    return f"http://{stack.gateway_address}/?session={session}&provider=offline"


def shot(browser: Any, name: str) -> Path:
    path = artifacts_dir() / f"console-{name}.png"
    browser.save_screenshot(str(path))
    return path


def css(browser: Any, selector: str) -> list[Any]:
    return list(browser.find_elements("css selector", selector))


def text_of(browser: Any, selector: str) -> str:
    return "\n".join(e.text for e in css(browser, selector))


def open_console(browser: Any, stack: Stack, session: str) -> None:
    browser.get(url(stack, session))
    wait_until(lambda: text_of(browser, "#status") == "live", 15, "the console's WebSocket")
    wait_until(lambda: css(browser, "#tools li"), 15, "the tools panel")


def send_chat(browser: Any, text: str) -> None:
    prompt = css(browser, "#prompt")[0]
    prompt.clear()
    prompt.send_keys(text)
    css(browser, "#send")[0].click()


def chat_in_background(stack: Stack, session: str, text: str) -> str:
    """Runs a chat turn over gRPC (not from the page); returns the async task id it started."""

    async def run() -> str:
        async with channel(stack.llm_address) as ch:
            stub = llm_pb2_grpc.LLMServiceStub(ch)
            request = llm_pb2.ChatRequest(
                session_id=session,
                provider="offline",
                messages=[llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content=text)],
            )
            reply = await stub.Chat(request, timeout=20)
            (record,) = reply.tool_calls
            assert record.task_id, reply
            for _ in range(200):
                task = await stub.GetTask(llm_pb2.GetTaskRequest(task_id=record.task_id))
                if task.task.status != llm_pb2.TASK_STATUS_RUNNING:
                    return record.task_id
                await asyncio.sleep(0.1)
            raise AssertionError(f"task {record.task_id} did not finish")

    return asyncio.run(run())


def test_a_chat_streams_its_tool_call_with_arguments_result_and_latency_then_the_answer(
    stack: Stack, browser: Any
) -> None:
    open_console(browser, stack, "browser-chat")
    send_chat(browser, "What is the weather in Paris?")
    card = wait_until(
        lambda: css(browser, '.card.toolcall[data-state="done"]'), 15, "the finished tool call"
    )[0]
    assert card.find_element("css selector", ".name").text == "get_weather"
    assert json.loads(card.find_element("css selector", ".args").text) == {"city": "Paris"}
    assert '"condition": "light rain"' in card.find_element("css selector", ".output").text
    assert card.find_element("css selector", ".latency").text.endswith(" ms")
    answer = wait_until(
        lambda: css(browser, ".msg.assistant:not(.streaming) .meta"), 15, "the final answer"
    )
    assert "offline" in answer[0].text
    assert "get_weather returned" in text_of(browser, ".msg.assistant .text")
    # The answer was applied piece by piece, as ChatStream's text deltas came.
    deltas = css(browser, ".msg.assistant")[-1].get_attribute("data-deltas")
    assert int(deltas or 0) > 3, "the answer did not stream"
    shot(browser, "01-chat-with-tool-call")


def test_a_tool_results_image_is_shown_in_the_chat(stack: Stack, browser: Any) -> None:
    open_console(browser, stack, "browser-picture")
    send_chat(browser, "Draw the chart picture")
    image = wait_until(lambda: css(browser, ".card.toolcall .parts img"), 15, "the image part")[0]
    wait_until(
        lambda: browser.execute_script("return arguments[0].naturalWidth", image) == 48,
        5,
        "the decoded image",
    )
    shot(browser, "02-image-result")


def test_an_async_result_is_pushed_live_and_acknowledged_once_shown(
    stack: Stack, browser: Any
) -> None:
    open_console(browser, stack, "browser-async")
    send_chat(browser, "ping example.com")
    card = wait_until(
        lambda: css(browser, '.card.toolcall[data-state="async"]'), 15, "the async ack"
    )[0]
    task_id = card.get_attribute("data-task-id")
    assert "running in the background" in card.find_element("css selector", ".state").text
    shot(browser, "03-async-running")
    # No reload: the result arrives over the WebSocket once the ping finishes.
    pushed = wait_until(
        lambda: css(browser, f'#tasks .task[data-task-id="{task_id}"][data-acked="true"]'),
        20,
        "the pushed and acknowledged async result",
    )[0]
    assert '"host": "example.com"' in pushed.text
    assert "finished" in card.find_element("css selector", ".state").text
    shot(browser, "04-async-result-pushed")


def test_results_not_yet_shown_come_after_a_reload_and_shown_ones_do_not(
    stack: Stack, browser: Any
) -> None:
    session = "browser-reload"
    open_console(browser, stack, session)
    send_chat(browser, "ping example.org")
    seen = wait_until(
        lambda: css(browser, '#tasks .task[data-acked="true"]'), 20, "the first result, shown"
    )[0].get_attribute("data-task-id")

    # The page is gone while a second result finishes: nobody has seen it.
    browser.get("about:blank")
    unseen = chat_in_background(stack, session, "ping example.net")
    open_console(browser, stack, session)
    wait_until(
        lambda: css(browser, f'#tasks .task[data-task-id="{unseen}"][data-acked="true"]'),
        15,
        "the result that finished while the page was away",
    )
    # Subscribe sends every unacknowledged result first: the first one, acknowledged,
    # would have come before the second.
    assert not css(browser, f'#tasks .task[data-task-id="{seen}"]')
    # Both stay in the history the page reloaded from GetHistory.
    notes = text_of(browser, ".msg.system")
    assert seen in notes and unseen in notes
    shot(browser, "05-after-reload")

    # And after one more reload, neither comes again: a third result, pushed live,
    # arrives after where they would have been.
    browser.refresh()
    wait_until(lambda: text_of(browser, "#status") == "live", 15, "the WebSocket again")
    send_chat(browser, "ping example.com")
    wait_until(lambda: css(browser, '#tasks .task[data-acked="true"]'), 20, "a third result")
    ids = [e.get_attribute("data-task-id") for e in css(browser, "#tasks .task")]
    assert seen not in ids and unseen not in ids and len(ids) == 1, ids


def progress_shown(browser: Any, task_id: str) -> tuple[str, str]:
    """The running job's bar value and its text, or ("", "") while it has none."""
    node = f'#tasks .task.running[data-task-id="{task_id}"]'
    bars = css(browser, f"{node} progress")
    if not bars:
        return "", ""
    return bars[0].get_attribute("value") or "", text_of(browser, f"{node} .progress-text")


def test_a_long_jobs_progress_bar_advances_survives_a_reload_and_gives_way_to_its_result(
    stack: Stack, browser: Any, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    env = {"LONG_JOB_DIR": str(jobs)}
    with PluginProcess("tests.support.long_job_plugin", stack.registry_address, tmp_path,
                       extra_env=env):  # fmt: skip
        session = "browser-progress"
        open_console(browser, stack, session)
        wait_until(lambda: css(browser, '#tools li[data-tool="hold_job"]'), 20, "hold_job")
        send_chat(browser, 'hold job "bar1"')
        card = wait_until(
            lambda: css(browser, '.card.toolcall[data-state="async"]'), 15, "the job's ack"
        )[0]
        task_id = card.get_attribute("data-task-id")
        wait_until((jobs / "bar1.json").exists, 15, "the job's handle")
        # The test is the job's worker: another process holding its handle.
        job = Job.from_json((jobs / "bar1.json").read_text())

        assert job.report_progress(0.25, "scanning port 22")
        wait_until(
            lambda: progress_shown(browser, task_id) == ("0.25", "25 % · scanning port 22"),
            15,
            "the bar at 25 %",
        )
        shot(browser, "11-job-progress")
        assert job.report_progress(0.75, "scanning port 443")
        wait_until(
            lambda: progress_shown(browser, task_id) == ("0.75", "75 % · scanning port 443"),
            15,
            "the bar advanced to 75 %",
        )
        assert "75 % · scanning port 443" in card.find_element("css selector", ".state").text

        # A reload: where the job stands comes again from the LLMService.
        browser.refresh()
        wait_until(lambda: text_of(browser, "#status") == "live", 15, "the WebSocket again")
        wait_until(
            lambda: progress_shown(browser, task_id) == ("0.75", "75 % · scanning port 443"),
            15,
            "the bar after the reload",
        )
        shot(browser, "12-job-progress-after-reload")

        job.complete({"open": [22, 443]})
        done = wait_until(
            lambda: css(browser, f'#tasks .task[data-task-id="{task_id}"][data-acked="true"]'),
            15,
            "the job's result in place of its bar",
        )[0]
        assert '"open"' in done.text and "running" not in done.get_attribute("class")
        assert not css(browser, "#tasks .task.running")
        shot(browser, "13-job-result")


def test_the_invoke_form_calls_a_tool_and_shows_the_registrys_validation_error(
    stack: Stack, browser: Any
) -> None:
    open_console(browser, stack, "browser-invoke")
    css(browser, '#tools li[data-tool="get_forecast"]')[0].click()
    wait_until(lambda: css(browser, "#invoke-form #arg-city"), 5, "the generated form")
    assert css(browser, "#arg-days")[0].get_attribute("inputmode") == "decimal"
    wait_until(lambda: "calls" in text_of(browser, "#tool-detail dl"), 5, "the tool's stats")

    css(browser, "#arg-city")[0].send_keys("Tokyo")
    css(browser, "#arg-days")[0].send_keys("2")
    css(browser, "#invoke-button")[0].click()
    ok = wait_until(lambda: css(browser, "#invoke-result .result.ok"), 15, "the result")[0]
    assert ok.text.count('"day"') == 2, ok.text
    wait_until(lambda: "1 (errors 0)" in text_of(browser, "#tool-detail dl"), 5, "stats")
    shot(browser, "06-invoke-ok")

    days = css(browser, "#arg-days")[0]
    days.clear()
    days.send_keys("two")
    css(browser, "#invoke-button")[0].click()
    refused = wait_until(lambda: css(browser, "#invoke-result .result.error"), 15, "the error")
    text = refused[0].text
    assert "INVALID_ARGUMENT" in text and "days" in text and "'two' is not of type" in text, text
    shot(browser, "07-invoke-validation-error")

    # Raw JSON: the registry's own parser answers.
    css(browser, "#invoke-as-json")[0].click()
    raw = css(browser, "#invoke-raw")[0]
    raw.clear()
    raw.send_keys('{"city": ')
    css(browser, "#invoke-button")[0].click()
    wait_until(
        lambda: (
            "INVALID_ARGUMENT" in text_of(browser, "#invoke-result .result.error")
            and "JSON" in text_of(browser, "#invoke-result .result.error")
        ),
        15,
        "the JSON error",
    )


def test_a_killed_plugins_tools_vanish_from_the_tools_panel(stack: Stack, browser: Any) -> None:
    open_console(browser, stack, "browser-tools")
    assert css(browser, '#tools li[data-tool="get_weather"]')
    assert css(browser, '#tools li[data-tool="ping"] .badge.async')
    css(browser, '#tools li[data-tool="get_weather"]')[0].click()
    wait_until(lambda: css(browser, "#invoke-form"), 5, "the form")
    shot(browser, "08-tools-before-kill")

    (proc,) = [p for name, p in stack.procs if name == "weather_plugin"]
    proc.send_signal(signal.SIGKILL)  # no goodbye: the registry notices the lease expiring
    proc.wait(10)
    wait_until(
        lambda: not css(browser, '#tools li[data-tool="get_weather"]'), 20, "get_weather gone"
    )
    assert not css(browser, '#tools li[data-tool="get_forecast"]')
    assert css(browser, '#tools li[data-tool="ping"]'), "the other plugin's tools stay"
    assert "gone" in text_of(browser, "#tool-detail h3")
    assert css(browser, "#invoke-button")[0].get_attribute("disabled") is not None
    shot(browser, "09-tools-after-kill")


def test_a_chat_the_llmservice_refuses_is_an_http_error_with_its_reason(stack: Stack) -> None:
    chat = f"http://{stack.gateway_address}/console/api/chat"
    bad = httpx.post(chat, json={"session": "no spaces allowed", "text": "hi"}, timeout=20)
    assert bad.status_code == 422, bad.text
    assert bad.json()["code"] == "INVALID_ARGUMENT" and "session_id" in bad.json()["error"]
    ok = httpx.post(chat, json={"session": "http-chat", "text": "the chart picture"}, timeout=20)
    assert ok.headers["content-type"] == "application/x-ndjson"
    events = [json.loads(line) for line in ok.text.splitlines()]
    assert "tool_call_started" in events[0] and "usage" in events[-1]
    assert any("text_delta" in e for e in events) and any("final" in e for e in events)


def test_with_a_token_the_page_asks_for_it_once_and_keeps_it_for_the_tab(
    stack: Stack, browser: Any, tmp_path: Path
) -> None:
    env = {"TOOLCALL_TOKEN": "s3cret-token", "TOOLCALL_LLM_ADDRESS": stack.llm_address}
    with GatewayProcess(stack.registry_address, tmp_path, **env) as gateway:
        asyncio.run(gateway.healthy())
        browser.get(f"{gateway.url}/?session=browser-token")
        gate = wait_until(lambda: css(browser, "#token-gate:not([hidden])"), 10, "the token gate")
        assert "Token required" in gate[0].text
        shot(browser, "10-token-gate")
        css(browser, "#token-input")[0].send_keys("s3cret-token")
        css(browser, "#token-form button")[0].click()
        wait_until(
            lambda: text_of(browser, "#status") == "live", 15, "the WebSocket with the token"
        )
        wait_until(lambda: css(browser, '#tools li[data-tool="ping"]'), 15, "the tools")
        # A reload in the same tab keeps it (sessionStorage): no gate again.
        browser.refresh()
        wait_until(lambda: text_of(browser, "#status") == "live", 15, "live after a reload")
        assert css(browser, "#token-gate[hidden]")
