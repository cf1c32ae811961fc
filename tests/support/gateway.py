"""The HTTP gateway (``toolcall gateway``) as a real child process, for the MCP and HTTP tests."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx2 as httpx

from tests.support.plugins import ChildProcess, child_env, free_port


class GatewayProcess(ChildProcess):
    """``toolcall gateway`` on a free loopback port, pointed at ``registry``."""

    name = "gateway"

    def __init__(self, registry: str, tmp_path: Path, *, role: str = "", **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "toolcall.cli", "gateway"]
        argv += ["--address", f"127.0.0.1:{self.port}", "--registry", registry]
        if role:
            argv += ["--role", role]
        super().__init__(argv, tmp_path / f"gateway-{self.port}.log", child_env(**env))

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"

    async def healthy(self, timeout_s: float = 20.0) -> None:
        """Waits until /healthz says the gateway has the registry's tools."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as http:
            while True:
                assert self.alive(), f"gateway exited:\n{self.log()}"
                try:
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"gateway not healthy in {timeout_s}s:\n{self.log()}")
                await asyncio.sleep(0.05)
