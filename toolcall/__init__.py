"""toolcall: typed, fast, safe tool calling for LLM applications over gRPC.

This package holds what the services and the plugin SDK share: the generated
API (``toolcall.v1``), configuration defaults, JSON <-> protobuf conversion,
tool schema checks and the one routine that dispatches a call to a plugin.
"""

__version__ = "0.1.0"

# Before anything imports grpc: it reads its settings once, at import.
from toolcall import grpc_env as _grpc_env

_grpc_env.apply()
