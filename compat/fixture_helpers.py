"""Helpers shared by quiver's Feast fixture scripts (generate_fixtures.py and
generate_serving_fixtures.py): a stable process environment, JSON output, a
private redis-server, a real `feast serve` and plain HTTP requests to it; and for the
compatibility tests, `spawn` (a server whose log goes to a file, never to a pipe).

Only the standard library and the `redis` client are needed; nothing here
imports Feast. A script calls reexec_with_stable_env() before importing Feast
or pandas:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fixture_helpers import reexec_with_stable_env
    reexec_with_stable_env()
"""

import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

COMPAT_DIR = Path(__file__).resolve().parent
ROOT = COMPAT_DIR.parent
FEAST_CLI = Path(sys.executable).parent / "feast"


def reexec_with_stable_env() -> None:
    """Re-execute the running script with TZ=UTC and PYTHONHASHSEED=0 unless set.

    Feast's SQLite store converts naive datetimes with the machine's local zone,
    and Feast builds some lists through Python sets, whose string order depends
    on the hash seed.
    """
    if os.environ.get("TZ") != "UTC" or os.environ.get("PYTHONHASHSEED") != "0":
        env = dict(os.environ, TZ="UTC", PYTHONHASHSEED="0")
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def write_json(path: Path, data: Any) -> None:
    """Pretty, key-sorted UTF-8 JSON with a final newline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")


def strict_json_loads(text: str) -> Any:
    """json.loads that refuses NaN/Infinity tokens (they are not JSON)."""

    def reject(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token!r}")

    return json.loads(text, parse_constant=reject)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, and its children."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    """A private, non-persistent redis-server on a free localhost port."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        wait_until(client.ping, f"redis-server on port {port}", timeout=30)
        yield port
    finally:
        stop_process_group(proc)


def http_post(url: str, data: bytes) -> Tuple[int, str, str]:
    """POST `data` as application/json: (status code, Content-Type, response text),
    for error statuses too."""
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return (
                response.status,
                response.headers.get("Content-Type", ""),
                response.read().decode("utf-8"),
            )
    except urllib.error.HTTPError as error:
        return (
            error.code,
            error.headers.get("Content-Type", ""),
            error.read().decode("utf-8"),
        )


def post_json(url: str, body: Dict[str, Any]) -> Tuple[int, str]:
    """POST `body` as JSON: (status code, response text)."""
    status, _, text = http_post(url, json.dumps(body).encode("utf-8"))
    return status, text


def health_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


@contextlib.contextmanager
def feast_serve(repo: Path, log_path: Path) -> Iterator[str]:
    """`feast serve` of `repo` on a free localhost port; yields its base URL once healthy."""
    port = free_port()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(FEAST_CLI), "serve", "-h", "127.0.0.1", "-p", str(port)],
            cwd=repo,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: health_ok(base + "/health"), f"feast serve ({log_path})")
        yield base
    finally:
        stop_process_group(proc)


_LOG_DIR = None


def _log_dir() -> str:
    """One folder for this process's server logs, removed when the process exits."""
    global _LOG_DIR
    if _LOG_DIR is None:
        _LOG_DIR = tempfile.mkdtemp(prefix="quiver-compat-logs-")
        atexit.register(shutil.rmtree, _LOG_DIR, ignore_errors=True)
    return _LOG_DIR


def spawn(args: list) -> subprocess.Popen:
    """Starts a server with its log in a file. (A stderr pipe that nobody reads fills up at 64 KB
    and then blocks the server's next log line, and the request it was answering: moto's access
    log did that to a long test run.) The logs go away when the test process exits."""
    log = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False, dir=_log_dir())
    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    proc.log_path = log.name
    return proc


def log_of(proc: subprocess.Popen) -> str:
    """The last lines a server started by `spawn` logged, for failure messages."""
    try:
        return "\n".join(Path(proc.log_path).read_text(errors="replace").splitlines()[-40:])
    except OSError:
        return ""
