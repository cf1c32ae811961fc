"""The Python plugin SDK: write tools as functions, serve them over gRPC.

    from plugin_stub import Plugin, llm_tool

    class Weather(Plugin):
        @llm_tool
        def get_weather(self, city: str) -> dict:
            '''Current weather of a city.'''
            return {"city": city, "temp_c": 21}

    if __name__ == "__main__":
        Weather().run()

See docs/plugins.md for the full guide.
"""

from typing import TYPE_CHECKING, Any

from plugin_stub.context import CallContext
from plugin_stub.decorator import ToolMeta, ToolOptions, llm_tool, tool_meta
from plugin_stub.errors import ToolError
from plugin_stub.jobs import Accepted, Job, JobEnded, JobError
from plugin_stub.local_tools import ToolConflictError
from plugin_stub.parts import Audio, File, Image
from plugin_stub.plugin import Plugin
from plugin_stub.schema_inference import (
    SchemaInferenceError,
    infer_output_schema,
    infer_parameters,
)

# Importing plugin_stub does not load grpc, so that ``Plugin.run()`` can still
# apply gRPC's settings (toolcall/grpc_env.py); shape_result's module needs grpc.
if TYPE_CHECKING:
    from plugin_stub.callback_server import shape_result


def __getattr__(name: str) -> Any:
    if name == "shape_result":
        from plugin_stub.callback_server import shape_result

        return shape_result
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Accepted",
    "Audio",
    "CallContext",
    "File",
    "Image",
    "Job",
    "JobEnded",
    "JobError",
    "Plugin",
    "SchemaInferenceError",
    "ToolConflictError",
    "ToolError",
    "ToolMeta",
    "ToolOptions",
    "infer_output_schema",
    "infer_parameters",
    "llm_tool",
    "shape_result",
    "tool_meta",
]
