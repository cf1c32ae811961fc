"""Example plugin: weather from a small offline table (deterministic, no network).

Run it against a registry: ``python -m examples.weather_plugin`` (or
``python examples/weather_plugin.py``). It registers ``get_weather`` and
``get_forecast`` under the source ``plugin:weather``, both marked read-only
and idempotent, and ``get_weather`` returns a small icon of the condition as
an image content part beside its JSON.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import zlib
from enum import Enum
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin_stub import Image, Plugin, ToolError, llm_tool

CITIES: dict[str, dict[str, Any]] = {
    "beijing": {"city": "Beijing", "temp_c": 22, "condition": "sunny", "humidity": 35},
    "shanghai": {"city": "Shanghai", "temp_c": 26, "condition": "cloudy", "humidity": 70},
    "paris": {"city": "Paris", "temp_c": 17, "condition": "light rain", "humidity": 80},
    "london": {"city": "London", "temp_c": 14, "condition": "overcast", "humidity": 76},
    "new york": {"city": "New York", "temp_c": 19, "condition": "windy", "humidity": 55},
    "tokyo": {"city": "Tokyo", "temp_c": 24, "condition": "clear", "humidity": 60},
}
CONDITIONS = ("sunny", "cloudy", "light rain", "overcast", "windy", "clear")
# Icon colours (RGB) per condition; any other is grey.
COLOURS = {"sunny": (250, 200, 40), "clear": (90, 160, 250), "light rain": (60, 90, 200)}


def condition_icon(condition: str, side: int = 16) -> Image:
    """A ``side`` x ``side`` PNG filled with the condition's colour (no imaging library)."""
    pixel = bytes(COLOURS.get(condition, (150, 150, 160)))
    rows = (b"\x00" + pixel * side) * side

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    return Image(png + chunk(b"IEND", b""))


class Units(Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def _stable_number(text: str, modulo: int) -> int:
    """A number derived from ``text`` that is the same in every run (unlike hash())."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") % modulo


def lookup(city: str) -> dict[str, Any]:
    """Known cities from the table; any other name gets stable made-up weather."""
    key = " ".join(city.lower().split())
    if key in CITIES:
        return dict(CITIES[key])
    return {
        "city": city.strip().title(),
        "temp_c": 5 + _stable_number(key, 25),
        "condition": CONDITIONS[_stable_number(key + "/c", len(CONDITIONS))],
        "humidity": 30 + _stable_number(key + "/h", 60),
        "estimated": True,
    }


class WeatherPlugin(Plugin):
    plugin_id = "weather"

    @llm_tool(timeout=5, title="Current weather", read_only=True, idempotent=True)
    def get_weather(self, city: str, units: Units = Units.CELSIUS) -> list[Any]:
        """Current weather in a city.

        Args:
            city: City name, e.g. "Beijing".
            units: Temperature units.
        """
        report = lookup(city)
        if units is Units.FAHRENHEIT:
            report["temp_f"] = round(report.pop("temp_c") * 9 / 5 + 32, 1)
        # The report is the output; the icon a content part (vision models see it).
        return [report, condition_icon(report["condition"])]

    @llm_tool(timeout=5, title="Daily forecast", read_only=True, idempotent=True)
    def get_forecast(self, city: str, days: int = 3) -> list[dict[str, Any]] | dict[str, Any]:
        """Daily forecast for one of the cities in the table.

        A city that is not in the table is a ToolError, to show how errors reach the model.

        Args:
            city: City name; only the cities in the table are known.
            days: Number of days, 1 to 7.
        """
        key = " ".join(city.lower().split())
        if key not in CITIES:
            known = ", ".join(c["city"] for c in CITIES.values())
            raise ToolError(f"no forecast for {city!r}; known cities: {known}")
        if not 1 <= days <= 7:
            # A tool-level error without raising: the model is told what went wrong.
            return {"output": None, "is_error": True, "error": "days must be between 1 and 7"}
        base = CITIES[key]
        return [
            {
                "day": day,
                "temp_c": base["temp_c"] + _stable_number(f"{key}/{day}", 7) - 3,
                "condition": CONDITIONS[_stable_number(f"{key}/{day}/c", len(CONDITIONS))],
            }
            for day in range(1, days + 1)
        ]


if __name__ == "__main__":
    WeatherPlugin().run()
