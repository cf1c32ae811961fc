"""What a handler may learn about the call it serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plugin_stub.jobs import Job


@dataclass(frozen=True, slots=True)
class CallContext:
    """Passed to a handler that declares a parameter annotated ``CallContext``.

    The parameter is not part of the tool's schema; the model never sees it.
    """

    tool: str
    call_id: str
    session_id: str
    role: str
    raw_arguments: str
    # Async calls from the LLMService: the handle to run the call as a long
    # job (return ``Accepted``; see plugin_stub/jobs.py). None otherwise.
    job: Job | None = None
