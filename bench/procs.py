"""Process plumbing for the bench: start servers in their own sessions, stop them for sure,
read their CPU time and RSS from /proc, find free ports, wait until a server answers.

Every server is started with ``start_new_session=True``, so its process id is also
its session and process-group id: stopping signals the whole group (uvicorn and
LiteLLM worker processes included), and CPU/RSS are summed over every process
whose session id is that id. Linux only (reads /proc).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

__all__ = [
    "HttpReply",
    "ProcessGroup",
    "Started",
    "cpu_seconds",
    "free_port",
    "http_request",
    "machine_busy_seconds",
    "rss_bytes",
    "session_pids",
    "wait_port",
    "wait_until",
]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest  # rest[0] is field 3 (state)


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the bench process dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def session_pids(sid: int) -> list[int]:
    """Live processes whose session id is ``sid`` (a server and all its workers)."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        # field 6 (session) is rest[3]; skip zombies (state Z)
        if fields is not None and fields[3] == str(sid) and fields[0] != "Z":
            pids.append(int(entry))
    return sorted(pids)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (dead ones count as 0)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _CLK_TCK


def rss_bytes(pids: Sequence[int]) -> int:
    """Resident set size summed over ``pids``."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return total


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]
    body: bytes


def http_request(
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> HttpReply:
    """One blocking HTTP request (POST when ``body`` is given); HTTP errors are returned."""
    req = urllib.request.Request(url, data=body, headers=dict(headers or {}),
                                 method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpReply(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                             resp.read())
    except urllib.error.HTTPError as exc:
        return HttpReply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


@dataclass
class Started:
    """A server process started by :class:`ProcessGroup`."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        return session_pids(self.proc.pid)

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])


@dataclass
class ProcessGroup:
    """Owns every server the bench starts; ``stop_all`` (also on exit) kills them all."""

    started: list[Started] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Started:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        started = Started(name, proc, log_path)
        self.started.append(started)
        return started

    def stop(self, started: Started, grace: float = 8.0) -> None:
        """SIGTERM the server's process group, SIGKILL whatever is left after ``grace``."""
        pgid = started.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if started.proc.poll() is not None and not session_pids(pgid):
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            started.proc.wait(timeout=5)
        for pid in session_pids(pgid):  # stragglers that left the process group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if started in self.started:
            self.started.remove(started)

    def stop_all(self) -> None:
        for started in reversed(list(self.started)):
            self.stop(started, grace=3.0)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def wait_until(
    check: Callable[[], bool],
    timeout: float,
    started: Started | None = None,
    what: str = "server",
) -> None:
    """Poll ``check`` until it is true; fail early (with the log tail) if the server died."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if started is not None and started.proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with code {started.proc.returncode}; log tail:\n"
                f"{started.log_tail()}"
            )
        try:
            if check():
                return
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.2)
    tail = started.log_tail() if started is not None else ""
    raise RuntimeError(f"{what} not ready after {timeout:.0f}s ({last_error}); log tail:\n{tail}")
