"""Configuration defaults and environment variables, in one place.

Every setting can come from a ``TOOLCALL_*`` environment variable; command-line
flags override them. The table in README.md lists them all.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

DEFAULT_REGISTRY_ADDRESS = "127.0.0.1:48911"
DEFAULT_LLM_ADDRESS = "127.0.0.1:48912"
DEFAULT_GATEWAY_ADDRESS = "127.0.0.1:48913"
DEFAULT_ROLE = "default"

DEFAULT_TOOL_TIMEOUT_S = 30.0
MAX_TOOL_TIMEOUT_S = 300.0
# A long job (an async call its plugin accepted) fails past its tool's
# max_job_seconds: by default a day, at most 30 days.
DEFAULT_MAX_JOB_S = 24 * 3600.0
MAX_MAX_JOB_S = 30 * 24 * 3600.0
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


def gateway_address() -> str:
    return env("GATEWAY_ADDRESS", DEFAULT_GATEWAY_ADDRESS)


# A token file holds one short secret; anything larger is a wrong path.
MAX_TOKEN_BYTES = 4096


class ConfigError(ValueError):
    """A setting cannot be used (unreadable token file, ...); the message names it."""


def token_error(value: str) -> str | None:
    """Why ``value`` cannot be sent as ``authorization: Bearer <value>``, or None."""
    if not value.isascii() or not value.isprintable() or " " in value:
        return "must be printable ASCII without spaces (it is sent in a gRPC header)"
    return None


def read_limited(path: str | Path, limit: int, what: str) -> bytes:
    """The bytes of the file at ``path``; ConfigError when unreadable or over ``limit``.

    Configuration files are read whole, so each kind has a size bound: a path
    that points at a device, a log or a disk image fails at once instead of
    filling memory.
    """
    p = Path(path).expanduser()
    try:
        with p.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(p)!r}: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise ConfigError(f"{what} {str(p)!r} is larger than {limit} bytes")
    return raw


def read_token_file(path: str | Path) -> str:
    """The token in ``path``, surrounding whitespace removed; ConfigError when unusable.

    An empty file is an error, not "no token": it would silently turn
    authentication off.
    """
    p = Path(path).expanduser()
    raw = read_limited(p, MAX_TOKEN_BYTES, "token file")
    try:
        value = raw.decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"token file {str(p)!r} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"token file {str(p)!r} is empty")
    if err := token_error(value):
        raise ConfigError(f"the token in {str(p)!r} {err}")
    _warn_if_shared(p)
    return value


_warned_paths: set[str] = set()


def _warn_if_shared(path: Path) -> None:
    """Once per file: a token others on the machine can read is no secret."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077 and str(path) not in _warned_paths:
        _warned_paths.add(str(path))
        logging.getLogger(__name__).warning(
            "token file %s can be read by other users (mode %o); chmod 600 it",
            path,
            mode & 0o777,
        )


def warn_if_shared(path: Path) -> None:
    """Once per file: a secret file others on the machine can read (logged, not refused)."""
    _warn_if_shared(path)


def token() -> str:
    """Shared token for the registry's gated RPCs; empty means none is required.

    From ``TOOLCALL_TOKEN``, or read from the file named by
    ``TOOLCALL_TOKEN_FILE`` (a file with mode 0600 is never in a process list
    or inherited by child processes). Setting both is a ConfigError: which
    one wins would be a guess.
    """
    value, path = env("TOKEN"), env("TOKEN_FILE")
    if value and path:
        raise ConfigError("set TOOLCALL_TOKEN or TOOLCALL_TOKEN_FILE, not both")
    if path:
        return read_token_file(path)
    if value and (err := token_error(value)):
        raise ConfigError(f"TOOLCALL_TOKEN {err}")
    return value


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
