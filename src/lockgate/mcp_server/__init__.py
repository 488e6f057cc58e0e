"""``lockgate mcp serve``: lockgate's own capabilities as an MCP server (an adapter).

See :mod:`lockgate.mcp_server.server`.
"""

from lockgate.mcp_server.server import build_server, serve

__all__ = ["build_server", "serve"]
