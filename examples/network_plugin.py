"""Example plugin: an ASYNC ``ping`` tool, the slow-plugin case of the Ctrip article,
and ``scan_ports``, a long job.

The model gets ``ack_message`` at once; the result arrives later through
LLMService.Subscribe. The ping is simulated: deterministic, offline, no
packets are sent. ``TOOLCALL_PING_DELAY`` (seconds, default 1.5) sets how long
it "takes". ``scan_ports`` answers ``Accepted`` and a worker thread reports
progress three times (``TOOLCALL_SCAN_STEP_DELAY`` seconds apart, default 0.5)
before completing the job through the LLMService (plugin_stub/jobs.py); no
port is really scanned. Run it: ``python -m examples.network_plugin``.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import sys
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin_stub import Accepted, CallContext, Job, JobError, Plugin, llm_tool
from toolcall import config

DEFAULT_DELAY_S = 1.5
DEFAULT_SCAN_STEP_S = 0.5
SCAN_PORTS = (22, 80, 443)


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


def simulated_scan(handle: str, host: str, step_s: float) -> None:
    """The worker of a scan: any thread or process holding the job's handle could run it."""
    job = Job.from_json(handle)
    digest = hashlib.sha256(host.lower().encode()).digest()
    found = []
    try:
        for i, port in enumerate(SCAN_PORTS, 1):
            time.sleep(step_s)
            if job.cancelled:
                return
            if digest[i] % 3:
                found.append(port)
            job.report_progress(i / len(SCAN_PORTS), f"scanned port {port}")
        job.complete({"host": host, "open_ports": found, "simulated": True})
    except JobError as exc:  # cancelled, expired, or the LLMService is away
        print(f"scan of {host} stopped: {exc}", file=sys.stderr)


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

    @llm_tool(
        mode="async",
        ack_message="The port scan started; progress and the result will follow.",
        max_job_seconds=600,
    )
    def scan_ports(self, host: str, ctx: CallContext) -> Accepted:
        """Scan a host's common ports (a long job: progress is reported as it goes).

        Args:
            host: IP address or domain name to scan.
        """
        if ctx.job is None:
            raise ValueError("scan_ports runs as a long job: call it through the LLMService")
        step = config.env_float("SCAN_STEP_DELAY", DEFAULT_SCAN_STEP_S)
        worker = threading.Thread(
            target=simulated_scan, args=(ctx.job.to_json(), host.strip(), step), daemon=True
        )
        worker.start()
        return Accepted(job_id=f"scan-{host.strip()[:60]}")


if __name__ == "__main__":
    NetworkPlugin().run()
