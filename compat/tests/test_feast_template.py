"""Feast 0.67's own `feast init` template, untouched, through quiver.

The template's `test_workflow.py` is the first thing a Feast user runs. Here it runs, unmodified,
with Feast's SDK as a client of feature servers (`online_store: {type: remote}`), twice on copies
of one `feast init` repo:

- against Feast's own `feast serve` (and Feast's file offline store): the baseline;
- against quiver: `quiver serve --role ingest` online (its materialize and push endpoints
  included), on-demand views through `feast serve_transformations` beside it; with Feast's file
  offline store, and again with `quiver offline serve` as the remote offline store.

In the second quiver run, the workflow's `store.push(..., to=ONLINE_AND_OFFLINE)` writes its
offline half through Feast's remote offline client (`get_table_column_names_and_types_from_data_source`,
then `offline_write_batch`) into `quiver offline serve`, and its historical sections read through it.

Both runs must complete and print the same features: every historical and online section of the
workflow, equal line for line, except for the times that `datetime.now()` puts into the data
(masked), and with the printed Python values compared as values (a Map's key order is the hash
order of the Python process that wrote it, in Feast itself). The apply and materialize sections
are not compared: they print where the stores are.
"""

import ast
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
BIN = Path(sys.executable).parent
FEAST = BIN / "feast"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"  # test_workflow.py runs `feast apply` by name
    e.pop("FEATURE_STORE_YAML_BASE64", None)
    e["PYTHONUNBUFFERED"] = "1"
    return e


class Server:
    """A child process that must answer on `port` before it counts as started."""

    def __init__(self, args, cwd: Path, port: int, log: Path, what: str):
        self.log = log
        self.what = what
        self.proc = subprocess.Popen(
            [str(a) for a in args], cwd=cwd, env=env(), stdout=log.open("w"), stderr=subprocess.STDOUT
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited:\n{log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{what} did not start:\n{log.read_text()}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """`feast init` output, as generated (its data is relative to the time of init)."""
    root = tmp_path_factory.mktemp("template")
    subprocess.run([FEAST, "init", "demo_repo"], cwd=root, env=env(), check=True, capture_output=True)
    repo = root / "demo_repo" / "feature_repo"
    assert (repo / "test_workflow.py").exists()
    return repo


def run_workflow(repo: Path) -> str:
    out = subprocess.run(
        [sys.executable, "test_workflow.py"], cwd=repo, env=env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, f"test_workflow.py failed in {repo}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


# Times that depend on when the workflow ran: `datetime.now()` rows and batch-scoring timestamps.
NOW_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)?")


def sections(stdout: str) -> dict:
    """The workflow's printed sections (`--- title ---` headers), times masked; `name  :  [values]`
    lines (its online features) parsed into Python values."""
    out, title = {}, None
    for line in stdout.splitlines():
        if line.startswith("--- "):
            title = line
            out[title] = []
        elif title is not None:
            name, sep, values = line.partition("  :  ")
            if sep:
                out[title].append((name, ast.literal_eval(values)))
            else:
                out[title].append(NOW_LIKE.sub("<time>", line.rstrip()))
    return out


def client_repo(template: Path, at: Path, registry: Path, online: int, offline: str) -> Path:
    shutil.copytree(template, at)
    (at / "feature_store.yaml").write_text(
        "project: demo_repo\n"
        f"registry: {registry}\n"
        "provider: local\n"
        f"online_store:\n  type: remote\n  path: http://127.0.0.1:{online}\n"
        f"offline_store:\n{offline}"
        "entity_key_serialization_version: 3\n"
        "auth:\n  type: no_auth\n"
    )
    return at


@pytest.mark.parametrize("offline", ["file", "quiver"])
def test_the_template_workflow_through_quivers_servers_prints_what_feast_prints(
    template: Path, tmp_path: Path, offline: str
):
    logs = tmp_path / "logs"
    logs.mkdir()

    # Feast's own feature server, with Feast's SDK as its client.
    feast_server = tmp_path / "feast_server"
    shutil.copytree(template, feast_server)
    subprocess.run([FEAST, "apply"], cwd=feast_server, env=env(), check=True, capture_output=True)
    port = free_port()
    server = Server([FEAST, "serve", "--port", port, "--workers", "1"], feast_server, port,
                    logs / "feast_serve.log", "feast serve")
    try:
        client = client_repo(template, tmp_path / "feast_client", feast_server / "data" / "registry.db",
                             port, "  type: file\n")
        theirs = sections(run_workflow(client))
    finally:
        server.stop()

    # quiver's servers.
    repo = tmp_path / "quiver_server"
    shutil.copytree(template, repo)
    subprocess.run([FEAST, "apply"], cwd=repo, env=env(), check=True, capture_output=True)
    online, flight, transform = free_port(), free_port(), free_port()
    servers = []
    try:
        servers.append(Server([FEAST, "serve_transformations", "--port", transform], repo, transform,
                              logs / "transformations.log", "feast serve_transformations"))
        servers.append(Server([QUIVER, "serve", "--repo", repo, "--role", "ingest", "--port", online,
                               "--transformation-service", f"127.0.0.1:{transform}"],
                              repo, online, logs / "serve.log", "quiver serve"))
        if offline == "quiver":
            servers.append(Server([QUIVER, "offline", "serve", "--repo", repo, "--port", flight,
                                   "--transformation-service", f"127.0.0.1:{transform}"],
                                  repo, flight, logs / "offline.log", "quiver offline serve"))
            offline_store = f"  type: remote\n  host: 127.0.0.1\n  port: {flight}\n"
        else:
            offline_store = "  type: file\n"
        client = client_repo(template, tmp_path / "quiver_client", repo / "data" / "registry.db", online,
                             offline_store)
        ours = sections(run_workflow(client))
    finally:
        for s in servers:
            s.stop()

    assert list(ours) == list(theirs)
    compared = [t for t in theirs if t.startswith(("--- Historical features", "--- Online features"))]
    assert len(compared) == 6, list(theirs)
    for title in compared:
        assert ours[title] == theirs[title], (
            f"section {title!r} differs:\n--- Feast:\n" + "\n".join(map(str, theirs[title]))
            + "\n--- through quiver:\n" + "\n".join(map(str, ours[title]))
        )
