"""``ToolError``: how a tool reports an expected failure.

Any exception a handler raises becomes an ``is_error`` result, and the plugin
logs its traceback: that is what an author debugs with. A failure the tool
expects (an unknown city, a refused request) is not a bug: raising
``ToolError`` sends exactly its message (and ``output``, if given) and logs
one line without a traceback.
"""

from __future__ import annotations

from typing import Any


class ToolError(Exception):
    """An expected failure: the caller gets ``is_error``, this message and ``output``."""

    def __init__(self, message: str, *, output: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.output = output
