"""What a tool may return beside JSON: ``Image``, ``Audio`` and ``File`` (content parts).

    @llm_tool
    def chart(self, days: int) -> list:
        '''A chart of the last days' temperatures.'''
        return [{"days": days, "max_c": 24}, Image(render_png(days))]

A handler returns one part, or a list mixing parts and JSON values: the parts
go to the model as content parts (vision models see the image itself), the
JSON values as the output (one value: that value; several: a list of them).
The caller bounds them (docs/plugins.md: 16 parts, 4 images, 4 MiB each by
default) and checks that an image is what its type says.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path

from toolcall.parts import IMAGE_SIGNATURES
from toolcall.v1 import tools_pb2


def _sniff_image(data: bytes) -> str:
    for mime, starts in IMAGE_SIGNATURES.items():
        if data.startswith(starts) and (mime != "image/webp" or data[8:12] == b"WEBP"):
            return mime
    return ""


@dataclass(frozen=True, slots=True)
class Image:
    """An image: PNG, JPEG, GIF or WebP bytes (``mime_type`` is read from them when empty)."""

    data: bytes
    mime_type: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise TypeError(f"Image data must be bytes, got {type(self.data).__name__}")
        if not self.mime_type:
            sniffed = _sniff_image(bytes(self.data[:16]))
            if not sniffed:
                raise ValueError("Image data is not PNG, JPEG, GIF or WebP; pass mime_type")
            object.__setattr__(self, "mime_type", sniffed)

    @classmethod
    def from_path(cls, path: str | Path, mime_type: str = "") -> Image:
        """Reads the file now (in the handler, not later on the plugin's event loop)."""
        return cls(Path(path).read_bytes(), mime_type)

    def fill(self, part: tools_pb2.ContentPart) -> None:
        """Writes this image into ``part`` (one copy of the bytes)."""
        part.image.mime_type = self.mime_type
        part.image.data = bytes(self.data)


@dataclass(frozen=True, slots=True)
class Audio:
    """A sound clip: its bytes and ``mime_type`` ("audio/wav", "audio/mpeg"...)."""

    data: bytes
    mime_type: str

    def fill(self, part: tools_pb2.ContentPart) -> None:
        """Writes this clip into ``part``."""
        part.audio.mime_type = self.mime_type
        part.audio.data = bytes(self.data)


@dataclass(frozen=True, slots=True)
class File:
    """A file or resource: by reference (``uri``), by content (``data``), or both."""

    uri: str = ""
    data: bytes = b""
    mime_type: str = ""
    name: str = ""

    def __post_init__(self) -> None:
        if not self.uri and not self.data:
            raise ValueError("File needs a uri or data")

    @classmethod
    def from_path(cls, path: str | Path, mime_type: str = "") -> File:
        """The file's bytes, name and (guessed) type, read now; ``uri`` is its file:// URI."""
        p = Path(path).resolve()
        guessed = mime_type or mimetypes.guess_type(p.name)[0] or ""
        return cls(uri=p.as_uri(), data=p.read_bytes(), mime_type=guessed, name=p.name)

    def fill(self, part: tools_pb2.ContentPart) -> None:
        """Writes this file into ``part``."""
        r = part.resource
        r.uri, r.mime_type, r.data, r.name = self.uri, self.mime_type, bytes(self.data), self.name


Part = Image | Audio | File
PART_TYPES = (Image, Audio, File)
