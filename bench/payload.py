"""The one payload every scenario sends and answers: the seed's callback body and reply."""

from __future__ import annotations

import json
from typing import Any

TOOL_NAME = "get_weather"
ARGUMENTS: dict[str, Any] = {"city": "Beijing"}
RAW_ARGUMENTS = '{"city":"Beijing"}'
CALL_ID = "call_abc123"
OUTPUT: dict[str, Any] = {"temp_c": 22, "weather": "sunny"}

# POST body of the seed's HTTP callback (neko-llm-tool-calling, "Request body").
CALLBACK_BODY: dict[str, Any] = {
    "name": TOOL_NAME,
    "arguments": ARGUMENTS,
    "call_id": CALL_ID,
    "raw_arguments": RAW_ARGUMENTS,
}
# The seed's reply body.
CALLBACK_REPLY: dict[str, Any] = {"output": OUTPUT, "is_error": False}

PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name, e.g. 'Beijing'"}},
    "required": ["city"],
}
DESCRIPTION = "Look up the weather in a given city."

assert json.loads(RAW_ARGUMENTS) == ARGUMENTS
