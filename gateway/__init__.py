"""Edges to other ecosystems: MCP both ways, and (later) HTTP/JSON for browsers.

Everything here is a client of the services: it reaches the registry and the
LLMService over gRPC like any other program, and depends only on the shared
core (``toolcall``) and the generated API. It never imports
``registry_service`` or ``llm_service`` (checked by ``make lint``).

- ``gateway.mcp_serve``: the registry's tools as an MCP server (stdio, or
  streamable HTTP at ``/mcp`` of the HTTP gateway).
- ``gateway.mcp_mount``: an MCP server's tools registered as a toolcall plugin.
- ``gateway.main``: the HTTP gateway process on 127.0.0.1:48913 that hosts ``/mcp``
  and the web console.
- ``gateway.console``: the web console at ``/`` (chat, async results pushed over a
  WebSocket, live tools with an invoke form); its page is in ``console_static/``.
"""
