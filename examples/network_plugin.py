"""Example plugin: an ASYNC ``ping`` tool, the slow-plugin case of the Ctrip article.

The model gets ``ack_message`` at once; the result arrives later through
LLMService.Subscribe. The ping is simulated: deterministic, offline, no
packets are sent. ``TOOLCALL_PING_DELAY`` (seconds, default 1.5) sets how long
it "takes". Run it: ``python -m examples.network_plugin``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin_stub import Plugin, llm_tool
from toolcall import config

DEFAULT_DELAY_S = 1.5


def simulated_ping(host: str, count: int) -> dict[str, Any]:
    """Round-trip times derived from the host name: the same answer every time."""
    digest = hashlib.sha256(host.lower().encode()).digest()
    loopback = _is_loopback(host)
    base = 0.05 if loopback else 5 + digest[0] % 120
    rtts = [round(base + (digest[i + 1] % 40) / (400 if loopback else 10), 3) for i in range(count)]
    lost = 0 if loopback else digest[-1] % 100 // 90  # ~10% of hosts lose one packet
    return {
        "host": host,
        "packets": count,
        "received": count - lost,
        "loss": round(lost / count, 3),
        "rtt_ms": rtts[: count - lost],
        "simulated": True,
    }


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkPlugin(Plugin):
    plugin_id = "network"

    @llm_tool(
        mode="async",
        ack_message="Ping started; the result will follow when it completes.",
        timeout=30,
    )
    async def ping(self, host: str, count: int = 4) -> dict[str, Any]:
        """Ping a host (IP address or domain name) and report packet loss and round-trip times.

        Args:
            host: IP address or domain name to ping.
            count: Number of packets to send, 1 to 10.
        """
        host = host.strip()
        if not host or len(host) > 253 or any(c.isspace() for c in host):
            raise ValueError(f"{host!r} is not a host name or IP address")
        if not 1 <= count <= 10:
            raise ValueError("count must be between 1 and 10")
        await asyncio.sleep(config.env_float("PING_DELAY", DEFAULT_DELAY_S))
        return simulated_ping(host, count)


if __name__ == "__main__":
    NetworkPlugin().run()
