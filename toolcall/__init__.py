"""toolcall: typed, fast, safe tool calling for LLM applications over gRPC.

This package holds what the services and the plugin SDK share: the generated
API (``toolcall.v1``), configuration defaults, JSON <-> protobuf conversion,
tool schema checks and the one routine that dispatches a call to a plugin.
Importing it has no side effects: the programs' entry points apply gRPC's
settings (``toolcall.grpc_env``).
"""

__version__ = "0.1.0"


def installed_version(default: str = "") -> str:
    """The installed distribution's version (``default`` when run from a checkout)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("toolcall")
    except importlib.metadata.PackageNotFoundError:
        return default
