"""MCP servers the mount tests run as real subprocesses (by path: they need only ``mcp``)."""
