"""Identifiers toolcall makes up: call ids and async task ids.

One place, so their form is the same whoever makes them (registry, providers,
the chat loop, async tasks): a prefix and 20 random hex digits (80 bits).
"""

from __future__ import annotations

import uuid


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:20]


def new_task_id() -> str:
    return "task_" + uuid.uuid4().hex[:20]
