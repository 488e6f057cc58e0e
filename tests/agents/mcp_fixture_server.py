"""A small MCP server (official SDK, stdio) for the client tests.

``lookup`` and ``pid`` (the process id) are read-only; ``restart`` writes (appends to
$MCP_FIXTURE_LOG); ``crash`` kills the process mid-call; ``lookup``'s description is read
from $MCP_FIXTURE_DESC (a file) at start, so a test can change the definition between
server processes.
"""

from __future__ import annotations

import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

DESC = Path(os.environ["MCP_FIXTURE_DESC"]).read_text().strip()
LOG = os.environ["MCP_FIXTURE_LOG"]

server = MCPServer("fixture")


@server.tool(description=DESC, annotations=ToolAnnotations(read_only_hint=True))
def lookup(pump: str) -> str:
    return f"{pump}: 72 C"


@server.tool(description="Restart a pump.")
def restart(pump: str) -> str:
    with open(LOG, "a") as f:
        f.write(pump + "\n")
    return f"{pump} restarted"


@server.tool(description="The server's process id.",
             annotations=ToolAnnotations(read_only_hint=True))
def pid() -> str:
    return str(os.getpid())


@server.tool(description="Crash the server.", annotations=ToolAnnotations(read_only_hint=True))
def crash() -> str:
    os._exit(3)


if __name__ == "__main__":
    server.run()
