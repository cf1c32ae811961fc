"""Configuration defaults and environment variables, in one place.

Every setting can come from a ``TOOLCALL_*`` environment variable; command-line
flags override them. The table in README.md lists them all.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_REGISTRY_ADDRESS = "127.0.0.1:48911"
DEFAULT_LLM_ADDRESS = "127.0.0.1:48912"
DEFAULT_ROLE = "default"

DEFAULT_TOOL_TIMEOUT_S = 30.0
MAX_TOOL_TIMEOUT_S = 300.0
DEFAULT_LEASE_TTL_S = 10.0

# Largest gRPC message either service accepts or sends (bytes). Tool outputs
# above it come back to the model as a clear error instead of breaking a chat.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# Largest tool output (serialized) given to a caller or a model. Below the
# message limit with room to spare: a chat reply carries an output twice (the
# tool call record and the model's answer quoting it), and history keeps it.
MAX_TOOL_OUTPUT_BYTES = 1024 * 1024


def env(name: str, default: str = "") -> str:
    """Value of ``TOOLCALL_<name>``, or ``default`` when unset or empty."""
    return os.environ.get(f"TOOLCALL_{name}", "") or default


def env_float(name: str, default: float) -> float:
    raw = env(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SystemExit(f"TOOLCALL_{name} must be a number, got {raw!r}") from None


def env_int(name: str, default: int) -> int:
    raw = env(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"TOOLCALL_{name} must be an integer, got {raw!r}") from None


def registry_address() -> str:
    return env("REGISTRY_ADDRESS", DEFAULT_REGISTRY_ADDRESS)


def llm_address() -> str:
    return env("LLM_ADDRESS", DEFAULT_LLM_ADDRESS)


def token() -> str:
    """Shared token for mutating registry RPCs; empty means none is required."""
    return env("TOKEN")


def data_dir() -> Path:
    """Where SQLite files live: ``TOOLCALL_DATA_DIR``, else ``~/.local/share/toolcall``."""
    raw = env("DATA_DIR")
    if raw:
        return Path(raw).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "toolcall"


def roles() -> list[str]:
    """Roles (personas) the registry serves, from ``TOOLCALL_ROLES`` (comma separated)."""
    raw = env("ROLES", DEFAULT_ROLE)
    return [r.strip() for r in raw.split(",") if r.strip()] or [DEFAULT_ROLE]
