"""Scenarios B, B-uds and C's plugin: ``get_weather`` built with our SDK (plugin_stub).

``python -m bench.servers.sdk_plugin [--address unix:/path] [--sync]``. It
registers with ``TOOLCALL_REGISTRY_ADDRESS`` (B points that at a socket no
one listens on: the plugin then serves while its registrar backs off).
``--sync`` serves a plain ``def`` handler, which the SDK runs in its thread
pool, instead of the default ``async def``; ``--image`` one whose result also
carries a 1 MiB PNG as a content part (B-img).
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.payload import DESCRIPTION, OUTPUT, PARAMETERS, TOOL_NAME, image_png
from bench.processes import announce_ready
from plugin_stub import Image, Plugin, llm_tool

IMAGE = Image(image_png())


@llm_tool(name=TOOL_NAME, description=DESCRIPTION, parameters=PARAMETERS, timeout=30)
async def get_weather(city: str) -> dict[str, Any]:
    return OUTPUT


@llm_tool(name=TOOL_NAME, description=DESCRIPTION, parameters=PARAMETERS, timeout=30)
def get_weather_sync(city: str) -> dict[str, Any]:
    return OUTPUT


@llm_tool(name=TOOL_NAME, description=DESCRIPTION, parameters=PARAMETERS, timeout=30)
async def get_weather_image(city: str) -> list[Any]:
    return [OUTPUT, IMAGE]


class BenchPlugin(Plugin):
    plugin_id = "bench"

    async def on_start(self) -> None:
        announce_ready(self.address)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.0.0.1:0")
    parser.add_argument("--sync", action="store_true")
    parser.add_argument("--image", action="store_true")
    args = parser.parse_args()
    tool = get_weather_image if args.image else get_weather_sync if args.sync else get_weather
    plugin = BenchPlugin(address=args.address, tools=[tool])
    plugin.run(log_level="WARNING")


if __name__ == "__main__":
    main()
