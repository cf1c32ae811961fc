"""The offline provider: a deterministic, rule-based STAND-IN for a model.

It is not a language model. It exists so the whole stack (tool selection,
dispatch, async tasks, streaming) runs with no API key and no network, and so
tests and demos are reproducible. Its rules (also in docs/llm.md):

1. If the conversation ends with tool results, it answers in text from them:
   "<tool> returned: <json>" (keys sorted), "The tool <tool> failed: <error>"
   (plus " (output: <json>)" when the failed tool gave an output), or for an
   async acknowledgement "Started <tool> (task <id>); I'll report the result
   when it arrives." A result's content parts are named after it
   ("with [image: image/png, 2048 bytes, not shown]"), never shown.
2. Otherwise it reads the latest user message, splits it into lowercase
   words, drops stopwords, and scores every tool: 3 points per message word in
   the tool's name (split at ``_ . -`` and camelCase), 1 per word in its
   description. The best score wins; ties go to the alphabetically first name.
   No word in common: a fixed text listing the available tools.
3. It calls the winner once, filling only *required* parameters:
   strings get the first quoted text, else the run of capitalized words after
   a preposition ("in New York"), else the last capitalized word that does
   not start the sentence, else the last word; an enum gets the first of its
   values named in the message (else its first value); integers and numbers
   get the first number in the message (else 1); booleans get true.
0. A follow-up turn (an async result just arrived: the service's follow-up
   instruction after its note) is answered from the note:
   "Your async task <tool> finished: <json>" (or "... failed: <error>").
4. The request's tool control wins over rule 2: tool_choice "none" answers a
   fixed text and calls nothing; a forced tool is the one called; "required"
   with no word in common calls the alphabetically first tool. The tools it
   sees are already narrowed to allowed_tools; it makes one call per answer,
   so parallel_tool_calls changes nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from llm_service.messages import FOLLOW_UP_PROMPT, Message, ToolCall, parse_tool_content
from llm_service.providers.base import ModelTurn, ProviderRequest, TextChunk
from toolcall.parts import placeholder
from toolcall.tools import ToolSpec

MODEL = "rules-v1"
# The rules read at most this much of the latest user message: their cost per
# turn stays bounded (a 1 MiB message held the event loop 50 ms; now 0.65 ms).
MAX_READ_CHARS = 16 * 1024

STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been before being
    below between both but by can could did do does doing down during each few for from
    further get give had has have having he her here hers him his how i if in into is it
    its just know let me more most my myself no nor not now of off on once only or other
    our out over own please same she should show so some such tell than that the their
    them then there these they this those through to too under until up use very want was
    we were what when where which while who whom why will with would you your""".split()
)
PREPOSITIONS = ("in", "for", "of", "at", "to", "on", "about", "from", "near")

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_QUOTED = re.compile(r"\"([^\"]+)\"|'([^']+)'|“([^”]+)”")
_TOKEN = re.compile(r"[\w.:/@\-]+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS}


def name_words(name: str) -> set[str]:
    return words(_CAMEL.sub(" ", name).replace("_", " ").replace(".", " ").replace("-", " "))


def pick_tool(message: str, tools: list[ToolSpec]) -> ToolSpec | None:
    """Rule 2: the best-scoring tool for ``message``, or None when nothing matches."""
    said = words(message)
    best: tuple[int, str] | None = None
    chosen: ToolSpec | None = None
    for spec in tools:
        score = 3 * len(said & name_words(spec.name)) + len(said & words(spec.description))
        if score and (best is None or (-score, spec.name) < best):
            best, chosen = (-score, spec.name), spec
    return chosen


def _clean(token: str) -> str:
    return token.strip(".,;:!?")


def string_argument(message: str) -> str:
    """Rule 3 for strings: quoted text, capitalized run after a preposition, ..."""
    if m := _QUOTED.search(message):
        return next(g for g in m.groups() if g)
    tokens = [t for t in (_clean(t) for t in _TOKEN.findall(message)) if t]
    for i, tok in enumerate(tokens[:-1]):
        if tok.lower() in PREPOSITIONS and tokens[i + 1][:1].isupper():
            run = [tokens[i + 1]]
            for nxt in tokens[i + 2 :]:
                if not nxt[:1].isupper():
                    break
                run.append(nxt)
            return " ".join(run)
    capitalized = [t for t in tokens[1:] if t[:1].isupper()]
    if capitalized:
        return capitalized[-1]
    return tokens[-1] if tokens else ""


def fill_arguments(spec: ToolSpec, message: str) -> dict[str, Any]:
    props: dict[str, Any] = spec.parameters.get("properties") or {}
    args: dict[str, Any] = {}
    for pname in spec.parameters.get("required") or []:
        schema = props.get(pname) or {}
        kind = schema.get("type")
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            lowered = message.lower()
            named = [v for v in schema["enum"] if str(v).lower() in lowered]
            args[pname] = (named or schema["enum"])[0]
        elif kind == "integer" or kind == "number":
            m = _NUMBER.search(message)
            number = float(m.group()) if m else 1.0
            args[pname] = int(number) if kind == "integer" else number
        elif kind == "boolean":
            args[pname] = True
        elif kind == "string" or kind is None:
            args[pname] = string_argument(message)
    return args


def describe_result(msg: Message) -> str:
    """Rule 1: one sentence per tool result (its content parts named, never shown)."""
    sentence = _describe_value(msg)
    if msg.parts:
        sentence += " with " + ", ".join(placeholder(p) for p in msg.parts)
    return sentence


def _describe_value(msg: Message) -> str:
    value = parse_tool_content(msg.content)
    if isinstance(value, dict) and set(value) == {"error"}:
        return f"The tool {msg.name} failed: {value['error']}"
    if isinstance(value, dict) and set(value) == {"error", "output"}:
        output = json.dumps(
            value["output"], ensure_ascii=False, separators=(", ", ": "), sort_keys=True
        )
        return f"The tool {msg.name} failed: {value['error']} (output: {output})"
    if isinstance(value, dict) and value.get("status") == "accepted" and "task_id" in value:
        return (
            f"Started {msg.name} (task {value['task_id']}); I'll report the result when it arrives."
        )
    # Keys sorted: the result crossed gRPC as a Struct, whose order is arbitrary.
    rendered = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True)
    return f"{msg.name} returned: {rendered}"


def no_match_text(tools: list[ToolSpec]) -> str:
    intro = "I am the offline stand-in (rule-based, not a language model). "
    if not tools:
        return intro + "No tool matched your message, and no tools are available to this role."
    listed = "; ".join(
        f"{t.name} ({t.description.strip().splitlines()[0][:80]})" if t.description else t.name
        for t in sorted(tools, key=lambda t: t.name)
    )
    return (
        intro + f"No tool matched your message. Available tools: {listed}. "
        "Mention a tool's name or words from its description."
    )


TOOLS_OFF_TEXT = (
    "I am the offline stand-in (rule-based, not a language model). "
    "Tools are off for this turn (tool_choice none), so I call none."
)


_NOTE = re.compile(
    r"^(?:Result of async task \S+ \((?P<ok>[^)]*)\): (?P<output>.*)"
    r"|Async task \S+ \((?P<bad>[^)]*)\) (?P<how>failed|was cancelled): (?P<error>.*))\Z",
    re.S,
)


def follow_up_text(note: str) -> str:
    """Rule 0: a sentence from an async result's note."""
    m = _NOTE.match(note[:MAX_READ_CHARS])
    if m is None:
        return "An async task has finished."
    if m["ok"] is not None:
        return f"Your async task {m['ok']} finished: {m['output']}"
    return f"Your async task {m['bad']} {m['how']}: {m['error']}"


def respond(request: ProviderRequest) -> ModelTurn:
    msgs = request.messages
    if len(msgs) >= 2 and msgs[-1].role == "system" and msgs[-1].content == FOLLOW_UP_PROMPT:
        return ModelTurn(text=follow_up_text(msgs[-2].content))
    if msgs and msgs[-1].role == "tool":
        results: list[Message] = []
        for m in reversed(msgs):
            if m.role != "tool":
                break
            results.append(m)
        return ModelTurn(text="\n".join(describe_result(m) for m in reversed(results)))
    user = next((m.content for m in reversed(msgs) if m.role == "user"), "")[:MAX_READ_CHARS]
    if request.tool_choice == "none" and not request.forced_tool:
        return ModelTurn(text=TOOLS_OFF_TEXT)
    spec = pick_tool(user, request.tools)
    if request.forced_tool:
        spec = next((t for t in request.tools if t.name == request.forced_tool), spec)
    elif spec is None and request.tool_choice == "required" and request.tools:
        spec = min(request.tools, key=lambda t: t.name)
    if spec is None:
        return ModelTurn(text=no_match_text(request.tools))
    call = ToolCall(
        call_id="offline_" + uuid.uuid4().hex[:16],
        name=spec.name,
        raw_arguments=json.dumps(fill_arguments(spec, user), ensure_ascii=False),
    )
    return ModelTurn(tool_calls=[call])


class OfflineProvider:
    """Rule-based stand-in; see the module docstring for its rules."""

    name = "offline"
    default_model = MODEL

    async def generate(
        self, request: ProviderRequest
    ) -> AsyncGenerator[TextChunk | ModelTurn, None]:
        turn = respond(request)
        if request.stream and turn.text:
            for piece in re.findall(r"\s*\S+\s*", turn.text):
                yield TextChunk(piece)
        yield turn

    async def close(self) -> None:
        return None
