"""The one payload every scenario sends and answers: the seed's callback body and reply."""

from __future__ import annotations

import json
import random
import struct
import zlib
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

# B-img: the tool's result also carries this much PNG (content part).
IMAGE_BYTES = 1024 * 1024


def image_png(size: int = IMAGE_BYTES) -> bytes:
    """A valid PNG of about ``size`` bytes (incompressible pixels, stored uncompressed)."""
    side = max(1, int((size / 3) ** 0.5))
    rng = random.Random(side)
    rows = b"".join(b"\x00" + rng.randbytes(3 * side) for _ in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(rows, 0))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b"")


assert json.loads(RAW_ARGUMENTS) == ARGUMENTS
