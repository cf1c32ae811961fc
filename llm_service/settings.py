"""LLMService configuration: one dataclass, filled from ``TOOLCALL_*`` variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from toolcall import config
from toolcall.dispatch import Dispatcher, DispatchLimits
from toolcall.telemetry import Telemetry, TelemetrySettings
from toolcall.tls import ClientTLS, TLSSettings

DEFAULT_PROVIDER = "offline"
DEFAULT_MAX_TOOL_ROUNDS = 8
MAX_TOOL_ROUNDS_LIMIT = 32
DEFAULT_MAX_PARALLEL_TOOLS = 8
DEFAULT_PROVIDER_TIMEOUT_S = 60.0
DEFAULT_PROVIDER_MAX_RETRIES = 1
DEFAULT_MAX_HISTORY_MESSAGES = 200
DEFAULT_TASK_GRACE_S = 5.0
# As much as one gRPC message may carry: every single request message fits.
DEFAULT_MAX_REQUEST_BYTES = config.MAX_MESSAGE_BYTES
DEFAULT_HISTORY_CACHE_SESSIONS = 256
DEFAULT_HISTORY_CACHE_BYTES = 64 * 1024 * 1024
DEFAULT_HISTORY_PART_BYTES = 1024 * 1024
DEFAULT_SUBSCRIBE_BUFFER = 256
DEFAULT_SUBSCRIBE_BUFFER_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_ASYNC_TASKS_PER_SESSION = 64
DEFAULT_MAX_ASYNC_TASKS = 1024
# Chat turns in flight at once (waiting for their session included). Each
# holds its history, model reply and tool results in memory: 200 turns with
# 1 MB tool outputs took the service from 65 to 903 MB before this bound.
DEFAULT_MAX_TURNS = 128
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
DEFAULT_SYSTEM_PROMPT = (
    "You can call tools. Some tools run in the background: they answer at once "
    "with a task id, and their result arrives later as a system note in this conversation."
)


def _first_env(*names: str) -> str:
    for name in names:
        if value := os.environ.get(name, ""):
            return value
    return ""


@dataclass
class LLMSettings:
    """Everything ``start_llm`` needs; ``from_env()`` reads the environment."""

    address: str = config.DEFAULT_LLM_ADDRESS
    registry_address: str = config.DEFAULT_REGISTRY_ADDRESS
    default_role: str = config.DEFAULT_ROLE
    default_provider: str = DEFAULT_PROVIDER
    max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS
    max_parallel_tools: int = DEFAULT_MAX_PARALLEL_TOOLS
    # Where history and tasks live: "sqlite" (one process) or "postgres" (replicas).
    store: str = "sqlite"
    # None: <data dir>/llm.sqlite3, resolved when the service starts.
    db_path: Path | None = None
    # PostgreSQL, for store="postgres": a libpq URL, and connections per replica.
    pg_dsn: str = ""
    pg_pool_size: int = 20
    pg_schema: str = ""
    # Messages of a session's history sent to the provider (the newest ones).
    max_history_messages: int = DEFAULT_MAX_HISTORY_MESSAGES
    # Bytes of the messages of one provider request (system prompt, history,
    # the turn's messages and tool results); the oldest history goes first.
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    # Bounds of the in-memory history cache (sessions, and bytes in total).
    history_cache_sessions: int = DEFAULT_HISTORY_CACHE_SESSIONS
    history_cache_bytes: int = DEFAULT_HISTORY_CACHE_BYTES
    # Bytes of content parts (images...) one stored history message keeps.
    history_part_bytes: int = DEFAULT_HISTORY_PART_BYTES
    # Whether OpenAI-compatible models get images (image_url parts); off: a
    # text placeholder, for servers whose models take no image input.
    openai_image_input: bool = True
    # Models a request may name (fnmatch patterns); empty: any. A request
    # naming none uses the provider's configured model, always allowed.
    allowed_models: tuple[str, ...] = ()
    # Results queued for one Subscribe stream that is not reading; over
    # either bound the stream ends with RESOURCE_EXHAUSTED (nothing is lost:
    # unacknowledged results are sent again on the next Subscribe).
    subscribe_buffer: int = DEFAULT_SUBSCRIBE_BUFFER
    subscribe_buffer_bytes: int = DEFAULT_SUBSCRIBE_BUFFER_BYTES
    # Async tool tasks running at once, per session and in total; a call
    # over either gets an is_error result at once.
    max_async_tasks_per_session: int = DEFAULT_MAX_ASYNC_TASKS_PER_SESSION
    max_async_tasks: int = DEFAULT_MAX_ASYNC_TASKS
    # Chat / ChatStream turns in flight; past it RESOURCE_EXHAUSTED at once.
    max_turns: int = DEFAULT_MAX_TURNS
    # Default of ChatRequest.follow_up_async_results: when an async result
    # arrives, run a short model turn so the user gets a sentence about it.
    async_follow_up: bool = False
    # First message of every provider request; empty sends none.
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    provider_timeout_s: float = DEFAULT_PROVIDER_TIMEOUT_S
    # Retries of the provider SDKs on connection errors, 429 and 5xx.
    provider_max_retries: int = DEFAULT_PROVIDER_MAX_RETRIES
    openai_base_url: str = ""
    openai_api_key: str = ""
    openai_model: str = DEFAULT_OPENAI_MODEL
    gemini_base_url: str = ""
    gemini_api_key: str = ""
    gemini_model: str = DEFAULT_GEMINI_MODEL
    # On shutdown, how long running async tool tasks may take to finish
    # before they are cancelled and marked failed.
    task_grace_s: float = DEFAULT_TASK_GRACE_S
    # Tool output and plugin channel bounds (toolcall/dispatch.py).
    dispatch: DispatchLimits = field(default_factory=DispatchLimits)
    # Traces and metrics (toolcall/telemetry.py): what to build, or a ready one.
    telemetry: TelemetrySettings | Telemetry = field(default_factory=TelemetrySettings)
    grace_s: float = 5.0
    # TLS / mTLS (toolcall/tls.py) for serving and for dialling the registry;
    # principals (toolcall/auth.py); the opt-out for a non-loopback address.
    tls: TLSSettings = field(default_factory=TLSSettings)
    principals_file: str = ""
    insecure: bool = False
    # Sent as 'authorization: Bearer' on the registry Watch (TOOLCALL_TOKEN).
    registry_token: str = ""

    @classmethod
    def from_env(cls) -> LLMSettings:
        return cls(
            address=config.llm_address(),
            registry_address=config.registry_address(),
            default_role=config.env("DEFAULT_ROLE", config.DEFAULT_ROLE),
            default_provider=config.env("PROVIDER", DEFAULT_PROVIDER),
            max_tool_rounds=config.env_int("MAX_TOOL_ROUNDS", DEFAULT_MAX_TOOL_ROUNDS),
            max_parallel_tools=config.env_int("MAX_PARALLEL_TOOLS", DEFAULT_MAX_PARALLEL_TOOLS),
            store=config.env("LLM_STORE", "sqlite"),
            db_path=Path(p).expanduser() if (p := config.env("LLM_DB")) else None,
            pg_dsn=config.env("PG_DSN"),
            pg_pool_size=config.env_int("PG_POOL_SIZE", 20),
            pg_schema=config.env("PG_SCHEMA"),
            max_history_messages=config.env_int(
                "MAX_HISTORY_MESSAGES", DEFAULT_MAX_HISTORY_MESSAGES
            ),
            max_request_bytes=config.env_int("MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES),
            history_cache_sessions=config.env_int(
                "HISTORY_CACHE_SESSIONS", DEFAULT_HISTORY_CACHE_SESSIONS
            ),
            history_cache_bytes=config.env_int("HISTORY_CACHE_BYTES", DEFAULT_HISTORY_CACHE_BYTES),
            history_part_bytes=config.env_int("HISTORY_PART_BYTES", DEFAULT_HISTORY_PART_BYTES),
            openai_image_input=config.env("OPENAI_IMAGE_INPUT", "1").lower()
            not in ("0", "false", "no", "off"),
            allowed_models=tuple(
                m for m in (x.strip() for x in config.env("ALLOWED_MODELS").split(",")) if m
            ),
            subscribe_buffer=config.env_int("SUBSCRIBE_BUFFER", DEFAULT_SUBSCRIBE_BUFFER),
            subscribe_buffer_bytes=config.env_int(
                "SUBSCRIBE_BUFFER_BYTES", DEFAULT_SUBSCRIBE_BUFFER_BYTES
            ),
            max_async_tasks_per_session=config.env_int(
                "MAX_ASYNC_TASKS_PER_SESSION", DEFAULT_MAX_ASYNC_TASKS_PER_SESSION
            ),
            max_async_tasks=config.env_int("MAX_ASYNC_TASKS", DEFAULT_MAX_ASYNC_TASKS),
            max_turns=config.env_int("MAX_TURNS", DEFAULT_MAX_TURNS),
            async_follow_up=config.env("ASYNC_FOLLOW_UP", "0").lower()
            in ("1", "true", "yes", "on"),
            system_prompt=os.environ.get("TOOLCALL_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT),
            provider_timeout_s=config.env_float("PROVIDER_TIMEOUT", DEFAULT_PROVIDER_TIMEOUT_S),
            provider_max_retries=config.env_int(
                "PROVIDER_MAX_RETRIES", DEFAULT_PROVIDER_MAX_RETRIES
            ),
            openai_base_url=config.env("OPENAI_BASE_URL"),
            openai_api_key=_first_env("TOOLCALL_OPENAI_API_KEY", "OPENAI_API_KEY"),
            openai_model=config.env("OPENAI_MODEL", DEFAULT_OPENAI_MODEL),
            gemini_base_url=config.env("GEMINI_BASE_URL"),
            gemini_api_key=_first_env(
                "TOOLCALL_GEMINI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY"
            ),
            gemini_model=config.env("GEMINI_MODEL", DEFAULT_GEMINI_MODEL),
            task_grace_s=config.env_float("TASK_GRACE", DEFAULT_TASK_GRACE_S),
            dispatch=DispatchLimits.from_env(),
            tls=TLSSettings.from_env(),
            principals_file=config.env("PRINCIPALS_FILE"),
            registry_token=config.token(),
            telemetry=TelemetrySettings.from_env("llm", "LLM_METRICS_ADDRESS"),
        )

    def dispatcher(self, telemetry: Telemetry = Telemetry.OFF) -> Dispatcher:
        remote = bool(self.dispatch.remote_plugins)
        return self.dispatch.dispatcher(
            ClientTLS.of(self.tls) if remote else None, telemetry=telemetry, path="chat"
        )

    def resolved_db_path(self) -> Path:
        return self.db_path or config.data_dir() / "llm.sqlite3"
