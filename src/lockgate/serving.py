"""The serving process: uvicorn running :func:`lockgate.server.create_app`, nothing else.

``lockgate serve`` and ``lockgate up`` check the configuration first (a start-up problem is
one line and a non-zero exit), then replace their own process with this module
(``os.execv``: same PID, so supervisors and signals see one process). The gateway then
starts without what the command line loaded — typer, rich, every command module, the
pre-flight runtime's leftovers — which saved ~16 MB of resident memory per worker
(docs/hotpath.md, "Memory per worker"). With ``--workers N`` uvicorn's supervisor is this
small module too, and each spawned worker re-imports only it before loading the app.

    python -m lockgate.serving --host 127.0.0.1 --port 4000 --workers 1

The configuration comes from the environment the command left (``LOCKGATE_CONFIG``,
``LOCKGATE_HOME``, ``PROMETHEUS_MULTIPROC_DIR``...), as for any uvicorn worker.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["COMMAND", "main", "serve_args"]

COMMAND = (sys.executable, "-m", "lockgate.serving")
"""This module run by the running interpreter (followed by :func:`serve_args`)."""


def serve_args(host: str, port: int, workers: int) -> list[str]:
    """The arguments :func:`main` takes."""
    return ["--host", host, "--port", str(port), "--workers", str(workers)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lockgate.serving", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)

    import uvicorn

    from lockgate.serving_protocol import HTTP_PROTOCOL

    try:
        uvicorn.run(
            "lockgate.server:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http=HTTP_PROTOCOL,  # httptools, one write per plain response
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=30,
        )
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
