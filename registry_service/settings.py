"""Registry configuration: one dataclass, filled from ``TOOLCALL_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from registry_service.registry import DEFAULT_MAX_DEFINITION_BYTES, DEFAULT_MAX_TOOLS
from registry_service.watch import DEFAULT_QUEUE_SIZE
from toolcall import config
from toolcall.address_policy import loopback_address_error
from toolcall.dispatch import REMOTE_NEEDS_MTLS, Dispatcher, DispatchLimits
from toolcall.telemetry import Telemetry, TelemetrySettings
from toolcall.tls import ClientTLS, TLSSettings, exposure_error
from toolcall.tools import control_error

DEFAULT_SWEEP_INTERVAL_S = 0.25
DATA_FILE = "registry.sqlite3"


@dataclass
class RegistrySettings:
    """Everything ``start_registry`` needs; ``from_env()`` reads the environment."""

    # host:port or unix:/path. Mutating RPCs are refused from non-local peers
    # whatever the address, but prefer a loopback or unix address anyway.
    address: str = field(default_factory=config.registry_address)
    roles: list[str] = field(default_factory=lambda: [config.DEFAULT_ROLE])
    # Shared token for mutating RPCs; empty requires none.
    token: str = ""
    # SQLite file of leaseless tools; None: <data dir>/registry.sqlite3.
    data_path: Path | None = None
    # How often expired leases are looked for (tools of a dead plugin
    # disappear within ttl + this).
    lease_sweep_interval_s: float = DEFAULT_SWEEP_INTERVAL_S
    # Events a Watch stream may fall behind before it is ended (RESOURCE_EXHAUSTED).
    watch_queue_size: int = DEFAULT_QUEUE_SIZE
    # Tool output and plugin channel bounds (toolcall/dispatch.py).
    dispatch: DispatchLimits = field(default_factory=DispatchLimits)
    # Seconds in-flight calls get to finish on shutdown.
    grace_s: float = 5.0
    # Most (role, tool) entries held; Register past it is RESOURCE_EXHAUSTED.
    max_tools: int = DEFAULT_MAX_TOOLS
    # Most bytes of serialized definitions held, over all entries.
    max_definition_bytes: int = DEFAULT_MAX_DEFINITION_BYTES
    # TLS / mTLS (toolcall/tls.py), principals (toolcall/auth.py), and the
    # explicit opt-out for a non-loopback address without them.
    tls: TLSSettings = field(default_factory=TLSSettings)
    principals_file: str = ""
    insecure: bool = False
    # Traces and metrics (toolcall/telemetry.py): what to build, or a ready one.
    telemetry: TelemetrySettings | Telemetry = field(default_factory=TelemetrySettings)

    @classmethod
    def from_env(cls) -> RegistrySettings:
        return cls(
            address=config.registry_address(),
            roles=config.roles(),
            token=config.token(),
            data_path=Path(p).expanduser() if (p := config.env("REGISTRY_DB")) else None,
            lease_sweep_interval_s=config.env_float(
                "LEASE_SWEEP_INTERVAL", DEFAULT_SWEEP_INTERVAL_S
            ),
            watch_queue_size=config.env_int("WATCH_QUEUE_SIZE", DEFAULT_QUEUE_SIZE),
            max_tools=config.env_int("MAX_TOOLS", DEFAULT_MAX_TOOLS),
            max_definition_bytes=config.env_int(
                "MAX_DEFINITION_BYTES", DEFAULT_MAX_DEFINITION_BYTES
            ),
            dispatch=DispatchLimits.from_env(),
            tls=TLSSettings.from_env(),
            principals_file=config.env("PRINCIPALS_FILE"),
            telemetry=TelemetrySettings.from_env("registry", "REGISTRY_METRICS_ADDRESS"),
        )

    def dispatcher(self, telemetry: Telemetry = Telemetry.OFF) -> Dispatcher:
        remote = bool(self.dispatch.remote_plugins)
        return self.dispatch.dispatcher(
            ClientTLS.of(self.tls) if remote else None, telemetry=telemetry, path="invoke"
        )

    def resolved_data_path(self) -> Path:
        return self.data_path or config.data_dir() / DATA_FILE

    def problems(self) -> list[str]:
        """Settings that cannot work, as readable sentences."""
        bad: list[str] = []
        if not self.roles or any(not r.strip() for r in self.roles):
            bad.append("roles must be a non-empty list of non-empty names")
        for role in self.roles:
            if err := control_error(role):
                bad.append(f"role {role[:80]!r} {err}")
        if not 0 < self.lease_sweep_interval_s <= 10:
            bad.append("lease_sweep_interval_s must be between 0 and 10 seconds")
        if self.watch_queue_size < 1:
            bad.append("watch_queue_size must be at least 1")
        if not 1 <= self.max_tools <= 2**32 - 1:  # RegistryInfo.max_tools is a uint32
            bad.append("max_tools must be between 1 and 4294967295")
        if self.max_definition_bytes < 1:
            bad.append("max_definition_bytes must be at least 1")
        bad.extend(self.dispatch.problems())
        bad.extend(self.tls.problems())
        if self.dispatch.remote_plugins and not (self.tls.ca and self.tls.client_cert):
            bad.append(REMOTE_NEEDS_MTLS)
        if err := exposure_error(
            self.address, self.tls, authenticated=bool(self.principals_file), insecure=self.insecure
        ):
            bad.append(err)
        if self.address.startswith("unix:") and loopback_address_error(self.address):
            bad.append(f"address {self.address!r}: {loopback_address_error(self.address)}")
        return bad
