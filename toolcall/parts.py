"""Content parts of a tool result (images, audio, files, text beside its JSON output).

A plugin's parts are hostile input like its output: ``parts_error`` checks
them once, in ``Dispatcher.invoke``, against ``PartLimits`` (the services'
settings). An image must be what its MIME type says (its first bytes are
checked): a provider refuses a request holding a broken image, and the
history would replay it into every later turn of the session.

Here too: how a part is described to a model that cannot take it
(``placeholder``), never its bytes as base64 text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolcall.v1 import tools_pb2

# Defaults of the settings (TOOLCALL_MAX_RESULT_PARTS, TOOLCALL_MAX_RESULT_IMAGES,
# TOOLCALL_MAX_PART_BYTES). A result's parts together are also bounded by the
# gRPC message limit the plugin's reply must fit in (config.MAX_MESSAGE_BYTES).
MAX_PARTS = 16
MAX_IMAGES = 4
MAX_PART_BYTES = 4 * 1024 * 1024

MAX_URI_CHARS = 2048
MAX_NAME_CHARS = 256

# The image formats both OpenAI and Gemini take, with the bytes each starts with.
IMAGE_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),  # then 4 bytes of length, then "WEBP"
}
_MIME = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}\Z"
)


@dataclass(frozen=True, slots=True)
class PartLimits:
    """Bounds on a result's content parts; part of ``DispatchLimits``."""

    max_parts: int = MAX_PARTS
    max_images: int = MAX_IMAGES
    max_part_bytes: int = MAX_PART_BYTES

    def problems(self) -> list[str]:
        bad = []
        if self.max_parts < 0 or self.max_images < 0:
            bad.append("max_result_parts and max_result_images must not be negative")
        if self.max_part_bytes < 1:
            bad.append("max_part_bytes must be at least 1")
        return bad


def part_size(part: tools_pb2.ContentPart) -> int:
    """The bytes a part carries (its text's UTF-8, or its data)."""
    kind = part.WhichOneof("kind")
    if kind == "text":
        return len(part.text.encode())
    if kind == "image":
        return len(part.image.data)
    if kind == "audio":
        return len(part.audio.data)
    if kind == "resource":
        return len(part.resource.data)
    return 0


def _text_error(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"is longer than {limit} characters"
    if not value.isprintable():
        return "holds control or non-printable characters"
    return None


def _image_error(image: tools_pb2.ImagePart) -> str | None:
    signatures = IMAGE_SIGNATURES.get(image.mime_type)
    if signatures is None:
        return f"has mime_type {image.mime_type[:80]!r}; images must be one of " + ", ".join(
            IMAGE_SIGNATURES
        )
    if not image.data:
        return "has no data"
    data = image.data
    if not data.startswith(signatures) or (
        image.mime_type == "image/webp" and data[8:12] != b"WEBP"
    ):
        return f"is not a {image.mime_type.split('/')[1].upper()} image (its first bytes say so)"
    return None


def _one_part_error(part: tools_pb2.ContentPart) -> str | None:
    kind = part.WhichOneof("kind")
    if kind is None:
        return "is empty (set text, image, audio or resource)"
    if kind == "image":
        return _image_error(part.image)
    if kind == "audio":
        if not part.audio.mime_type.startswith("audio/") or not _MIME.match(part.audio.mime_type):
            return f"has mime_type {part.audio.mime_type[:80]!r}; audio needs audio/<type>"
        if not part.audio.data:
            return "has no data"
    if kind == "resource":
        r = part.resource
        if not r.uri and not r.data:
            return "is a resource with neither uri nor data"
        if err := _text_error(r.uri, MAX_URI_CHARS):
            return f"has a uri that {err}"
        if err := _text_error(r.name, MAX_NAME_CHARS):
            return f"has a name that {err}"
        if r.mime_type and not _MIME.match(r.mime_type):
            return f"has mime_type {r.mime_type[:80]!r}, which is not <type>/<subtype>"
    return None


def parts_error(parts: list[tools_pb2.ContentPart], limits: PartLimits) -> str | None:
    """Why a result's ``parts`` cannot be passed on, as "CODE: reason", or None."""
    if len(parts) > limits.max_parts:
        return (
            f"RESOURCE_EXHAUSTED: returned {len(parts)} content parts; "
            f"the limit is {limits.max_parts}"
        )
    images = 0
    for i, part in enumerate(parts):
        if (size := part_size(part)) > limits.max_part_bytes:
            return (
                f"RESOURCE_EXHAUSTED: returned a {size} byte {part.WhichOneof('kind')} "
                f"(part {i}); the limit is {limits.max_part_bytes} bytes per part"
            )
        if part.HasField("image"):
            images += 1
            if images > limits.max_images:
                return (
                    f"RESOURCE_EXHAUSTED: returned more than {limits.max_images} images; "
                    f"the limit is {limits.max_images} per result"
                )
        if err := _one_part_error(part):
            return f"INVALID_ARGUMENT: returned content part {i}, which {err}"
    return None


def placeholder(part: tools_pb2.ContentPart) -> str:
    """A short text standing for a part a model cannot take (never its bytes)."""
    kind = part.WhichOneof("kind")
    if kind == "text":
        return part.text
    if kind == "image":
        return f"[image: {part.image.mime_type}, {len(part.image.data)} bytes, not shown]"
    if kind == "audio":
        return f"[audio: {part.audio.mime_type}, {len(part.audio.data)} bytes, not shown]"
    if kind == "resource":
        r = part.resource
        what = ", ".join(
            x for x in (r.name, r.uri, r.mime_type, f"{len(r.data)} bytes" if r.data else "") if x
        )
        return f"[file: {what}]"
    return "[empty part]"
