"""List pages (AIP-158): page size, the byte budget of a page, and page tokens.

A token is the (role, name) key of the last tool of the previous page plus a
digest of the request's filters, base64url-encoded JSON. Keyset paging needs
no server state and stays correct while the registry changes: the next page
starts after that key, so unchanged tools are seen exactly once. A token is
not a secret and not signed: a forged one only moves the starting point.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from registry_service.store import Key

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
# Bytes of tools in one page; far below the 4 MiB message limit (one entry is
# at most ~100 KiB: a 64 KiB schema plus bounded strings), so a page always fits.
MAX_PAGE_BYTES = 1024 * 1024
# Longest token accepted; ours are under 200 bytes (a name is at most 64
# characters), the rest is room for long role names.
MAX_TOKEN_CHARS = 2048


class PageTokenError(ValueError):
    """The token is not one this registry issued for these filters."""


def page_size_error(page_size: int) -> str | None:
    if page_size < 0:
        return (
            f"must be 0 (default {DEFAULT_PAGE_SIZE}) or positive "
            f"(above {MAX_PAGE_SIZE} is lowered to {MAX_PAGE_SIZE})"
        )
    return None


def effective_page_size(page_size: int) -> int:
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _filters(role: str | None, source: str) -> str:
    raw = json.dumps([role, source]).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def encode_token(last: Key, role: str | None, source: str) -> str:
    raw = json.dumps({"v": 1, "after": list(last), "f": _filters(role, source)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, role: str | None, source: str) -> Key:
    """The key to start after; raises PageTokenError."""
    if len(token) > MAX_TOKEN_CHARS:
        raise PageTokenError(
            f"is longer than {MAX_TOKEN_CHARS} characters; pass next_page_token as is"
        )
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = data["after"]
        ok = data.get("v") == 1 and isinstance(after, list) and len(after) == 2
        ok = ok and all(isinstance(x, str) for x in after)
    except (binascii.Error, ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        raise PageTokenError("is not a next_page_token of a List reply; pass it as is")
    if data.get("f") != _filters(role, source):
        raise PageTokenError(
            "was issued for a List with another role or source; keep them the same while paging"
        )
    return (after[0], after[1])
