"""Real image bytes for the content-part tests (a valid PNG, made with zlib)."""

from __future__ import annotations

import struct
import zlib


def png(width: int = 1, height: int = 1, *, noise: bool = False) -> bytes:
    """A valid RGB PNG; ``noise`` makes it incompressible (its size grows with its area)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = bytes(3 * width)
    if noise:
        import random

        rng = random.Random(width * 7919 + height)
        rows = b"".join(b"\x00" + rng.randbytes(3 * width) for _ in range(height))
    else:
        rows = b"".join(b"\x00" + row for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 1 if noise else 9))
        + chunk(b"IEND", b"")
    )
