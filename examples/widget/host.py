"""A host application for the assistant panel: its page and the backend that mints tokens.

Run it next to a gateway whose ``console.widget.allowed_origins`` lists this page's origin::

    LOCKGATE_URL=http://127.0.0.1:8080 LOCKGATE_TEAM_KEY=lg-... \\
        python examples/widget/host.py --port 8090 --collection handbook --user alice

and open http://127.0.0.1:8090/. The team key stays in this process: for every page view
the backend calls ``POST /v1/widget/tokens`` and puts only the short-lived token in the page.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

PAGE = (Path(__file__).parent / "index.html").read_text()


def mint(gateway: str, team_key: str, body: dict[str, Any]) -> str:
    req = urllib.request.Request(
        gateway + "/v1/widget/tokens", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {team_key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["token"])


def make_server(host: str, port: int, gateway: str, team_key: str,
                token_body: dict[str, Any]) -> ThreadingHTTPServer:
    origin = f"http://{host}:{port}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?")[0] not in ("/", "/index.html"):
                self.send_error(404)
                return
            body = {"origin": origin, **token_body}
            token = mint(gateway, team_key, body)
            page = (PAGE.replace("{{GATEWAY}}", html.escape(gateway))
                    .replace("{{TOKEN}}", html.escape(token))
                    .replace("{{DOC_BASE}}", html.escape(origin + "/handbook/")))
            data = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return ThreadingHTTPServer((host, port), Handler)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--collection", default="handbook")
    ap.add_argument("--user", default="alice")
    ap.add_argument("--groups", default="")
    args = ap.parse_args()
    body = {"collection": args.collection, "user": args.user,
            "groups": [g for g in args.groups.split(",") if g], "ttl_seconds": 600}
    server = make_server("127.0.0.1", args.port, os.environ["LOCKGATE_URL"].rstrip("/"),
                         os.environ["LOCKGATE_TEAM_KEY"], body)
    print(f"host page on http://127.0.0.1:{args.port}/")
    server.serve_forever()


if __name__ == "__main__":
    main()
