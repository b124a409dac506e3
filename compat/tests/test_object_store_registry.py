"""Feast registries in object stores, quiver against the real Feast 0.67, on real servers:
moto's S3 server (`moto_server`) and gcp-storage-emulator (a GCS emulator), both from PyPI.

- S3, Feast writes: `feast apply` with `registry: s3://...` (FEAST_S3_ENDPOINT_URL pointing at
  moto, as a Feast user sets it); `quiver list` reads it as Feast does; `quiver materialize`
  writes SQLite and records its interval in the S3 registry, which Feast then reads;
  `quiver serve` serves the values and picks up a later `feast apply` (polling the object).
- S3, quiver writes: `quiver apply` to s3://, and Feast's `FeatureStore` lists it; concurrent
  `quiver apply` runs on one registry object never lose one another's change.
- The registry service over s3://: a snapshot of it; two replicas on one object, applies sent
  to both at once based on the same version: one lands, the other gets 409, every round; and
  materialization records sent to both at once both land.
- GCS: Feast writes through gcp-storage-emulator (STORAGE_EMULATOR_HOST), and quiver's gs://
  client reads it, or says precisely why this emulator cannot serve it.
- Data sources in S3 (a `FileSource` with an `s3://` path and its own `s3_endpoint_override`):
  quiver and Feast materialize the same sources and Feast reads the same online values from
  both; quiver's historical retrieval matches Feast's. Pushes to offline add a part object to
  a prefix (Feast's historical retrieval reads it) or extend a single object, without losing
  rows when two servers push to it at once.
- Errors: a missing bucket, an unreachable endpoint, a malformed URI: a clear message naming
  the URI, a non-zero exit, no panic.

Every test has its own bucket; the servers run once per session on free local ports.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "compat"))

import feast_summary  # noqa: E402
from fixture_helpers import log_of, spawn  # noqa: E402
from quickstart_data import write_quickstart_parquet  # noqa: E402

QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
BIN = Path(sys.executable).parent
FEAST_CLI = BIN / "feast"
EXPECTED = json.loads((ROOT / "registry-sync/tests/fixtures/feast_quickstart_expected.json").read_text())

# Static test credentials: with none, an S3 or GCS client would ask a cloud metadata server.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "quiver-test",
    "AWS_SECRET_ACCESS_KEY": "quiver-test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.time() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            pass
        assert proc.poll() is None, f"{what} exited: {log_of(proc)}"
        assert time.time() < deadline, f"{what} did not come up"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    proc = spawn([BIN / "moto_server", "-H", "127.0.0.1", "-p", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/moto-api/", proc, "moto_server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """A fresh bucket on moto, and the environment (also set for in-process Feast) that points
    S3 clients at it the way a Feast user does: FEAST_S3_ENDPOINT_URL."""
    import boto3

    env = {**AWS_ENV, "FEAST_S3_ENDPOINT_URL": moto_endpoint}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "FEATURE_STORE_YAML_BASE64"):
        monkeypatch.delenv(k, raising=False)
    bucket = f"quiver-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
    # The operator's trusted locations: sources and push targets in this bucket, reached
    # through moto's endpoint (a source's s3_endpoint_override must be allowed).
    monkeypatch.setenv("QUIVER_ALLOW_LOCATIONS", f"s3://{bucket}")
    monkeypatch.setenv("QUIVER_ALLOW_ENDPOINTS", moto_endpoint)
    yield {"bucket": bucket, "endpoint": moto_endpoint, "env": {**os.environ}}


def run(*args, cwd: Path = ROOT, env: dict = None, check: bool = True, timeout: float = 120):
    env = {k: v for k, v in (env or os.environ).items() if k != "FEATURE_STORE_YAML_BASE64"}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check:
        assert done.returncode == 0, f"{' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done


def quiver(*args, **kw) -> str:
    return run(QUIVER, *args, **kw).stdout


def set_registry(repo: Path, path: str, cache_ttl_seconds: int = 60) -> None:
    """Points the repo's feature_store.yaml at `path` (Feast's mapping form)."""
    yaml = repo / "feature_store.yaml"
    lines, in_registry = [], False
    for line in yaml.read_text().splitlines():
        if line.startswith("registry:"):
            in_registry = True
        elif not line.startswith(" "):
            in_registry = False
        if not in_registry:
            lines.append(line)
    lines.insert(1, f"registry:\n  registry_type: file\n  path: {path}\n  cache_ttl_seconds: {cache_ttl_seconds}")
    yaml.write_text("\n".join(lines) + "\n")


def feast_repo(tmp_path: Path, registry: str, cache_ttl_seconds: int = 60) -> Path:
    repo = tmp_path / "feast_repo"
    shutil.copytree(ROOT / "compat/feast_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    write_quickstart_parquet(repo / "data")
    set_registry(repo, registry, cache_ttl_seconds)
    return repo


def quiver_repo(tmp_path: Path, registry: str, name: str = "quickstart", project: str = None) -> Path:
    repo = tmp_path / name
    shutil.copytree(ROOT / "examples/quickstart", repo, ignore=shutil.ignore_patterns("*.db"))
    write_quickstart_parquet(repo / "data")
    set_registry(repo, registry)
    if project:
        yaml = repo / "feature_store.yaml"
        yaml.write_text(yaml.read_text().replace("project: quickstart", f"project: {project}"))
    return repo


def no_panic(done: subprocess.CompletedProcess) -> None:
    assert "panicked" not in done.stderr and "RUST_BACKTRACE" not in done.stderr, done.stderr


class Sidecar:
    """`quiver serve` on a free port, for the duration of a `with` block."""

    def __init__(self, repo: Path, *args: str) -> None:
        self.port = free_port()
        self.proc = spawn([str(QUIVER), "serve", "--repo", str(repo), "--port", str(self.port), *args])

    def __enter__(self) -> "Sidecar":
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            assert self.proc.poll() is None, f"quiver serve exited: {log_of(self.proc)}"
            assert time.time() < deadline, "quiver serve did not become ready"
            time.sleep(0.1)

    def __exit__(self, *_exc) -> None:
        self.proc.kill()
        self.proc.wait()

    def post(self, path: str, body: dict):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=json.dumps(body).encode())
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def features(self, refs: list, entities: dict):
        body = json.dumps({"features": refs, "entities": entities}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/get-online-features", data=body)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def values(answer: dict) -> dict:
    names = answer["metadata"]["feature_names"]
    return {n: answer["results"][i]["values"] for i, n in enumerate(names)}


# --- S3: Feast writes, quiver reads, serves, materializes, follows -------------------------------

def test_quiver_reads_serves_and_follows_what_feast_wrote_to_s3(s3: dict, tmp_path: Path) -> None:
    registry = f"s3://{s3['bucket']}/feast/registry.db"
    repo = feast_repo(tmp_path, registry, cache_ttl_seconds=1)
    run(FEAST_CLI, "apply", cwd=repo)
    assert not (repo / "data/registry.db").exists(), "Feast wrote to S3, not a local file"

    # quiver lists what Feast lists.
    listing = json.loads(quiver("list", "--repo", repo, "--json"))
    assert listing == feast_summary.summarize(str(repo))

    # quiver materializes into SQLite and records the interval in the S3 registry, where Feast
    # finds it.
    out = quiver("materialize", "--repo", repo, "--views", "driver_hourly_stats",
                 "2024-05-01T00:00:00", "2024-05-02T00:00:00")
    assert f"Recorded in registry {registry}" in out, out
    from feast import FeatureStore

    intervals = FeatureStore(repo_path=str(repo)).get_feature_view("driver_hourly_stats").materialization_intervals
    assert [(s.isoformat(), e.isoformat()) for s, e in intervals] == [
        ("2024-05-01T00:00:00+00:00", "2024-05-02T00:00:00+00:00")]

    with Sidecar(repo) as sidecar:
        status, answer = sidecar.features(["driver_hourly_stats:avg_daily_trips"], {"driver_id": [1001, 1002]})
        assert status == 200, answer
        assert values(answer)["avg_daily_trips"] == [10, 20]
        status, _ = sidecar.features(["driver_extra:avg_daily_trips"], {"driver_id": [1001]})
        assert status in (400, 404)

        # A later `feast apply` adds a view; the sidecar sees the object's new ETag (it polls
        # every cache_ttl_seconds) and serves it without a restart.
        with open(repo / "feature_repo.py", "a") as f:
            f.write(
                "\n\ndriver_extra = FeatureView(name='driver_extra', entities=[driver], ttl=timedelta(0),"
                " source=driver_stats_source, online=True,"
                " schema=[Field(name='avg_daily_trips', dtype=Int64)])\n")
        run(FEAST_CLI, "apply", cwd=repo)
        deadline = time.time() + 20
        while True:
            status, answer = sidecar.features(["driver_extra:avg_daily_trips"], {"driver_id": [1001]})
            if status == 200:
                break
            assert time.time() < deadline, f"quiver serve did not pick up the new view: {answer}"
            time.sleep(0.2)
        # Never materialized: served as such, not as an error.
        assert answer["results"][1]["statuses"] == ["NOT_FOUND"]


# --- S3: quiver writes, Feast reads --------------------------------------------------------------

def test_feast_reads_what_quiver_applied_to_s3(s3: dict, tmp_path: Path) -> None:
    registry = f"s3://{s3['bucket']}/quiver/registry.db"
    repo = quiver_repo(tmp_path, registry)
    out = quiver("apply", "--repo", repo)
    assert f"Registry written to {registry}" in out, out
    assert "No changes" in quiver("apply", "--repo", repo)

    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    assert sorted(v.name for v in store.list_feature_views()) == [
        "customer_profile", "driver_customer_affinity", "driver_hourly_stats", "driver_hourly_stats_fresh"]
    assert feast_summary.summarize(str(repo)) == {**EXPECTED, "on_demand_feature_views": []}
    assert json.loads(quiver("list", "--repo", repo, "--json")) == feast_summary.summarize(str(repo))


def test_historical_and_offline_serve_read_an_s3_registry(s3: dict, tmp_path: Path) -> None:
    """`quiver historical` and `quiver offline serve` (read per request) over a registry that
    Feast wrote to S3, checked against Feast's own historical retrieval."""
    import pandas as pd
    from feast import FeatureStore

    repo = feast_repo(tmp_path, f"s3://{s3['bucket']}/feast/registry.db")
    run(FEAST_CLI, "apply", cwd=repo)
    entities = pd.DataFrame({
        "driver_id": pd.Series([1001, 1002], dtype="int64"),
        "event_timestamp": pd.to_datetime(["2024-05-01T13:00:00Z", "2024-05-01T14:00:00Z"]),
    })
    entities.to_parquet(repo / "entities.parquet")
    quiver("historical", "--repo", repo, "--entities", repo / "entities.parquet",
           "--features", "driver_hourly_stats:avg_daily_trips", "--out", repo / "out.parquet")
    ours = pd.read_parquet(repo / "out.parquet")
    feast = FeatureStore(repo_path=str(repo)).get_historical_features(
        entity_df=entities, features=["driver_hourly_stats:avg_daily_trips"]).to_df()
    want = feast.sort_values(["driver_id", "event_timestamp"])["avg_daily_trips"].astype("Int64").tolist()
    got = ours.sort_values(["driver_id", "event_timestamp"])["avg_daily_trips"].astype("Int64").tolist()
    assert got == want == [10, 20], (got, want)

    port, http_port = free_port(), free_port()
    proc = spawn([QUIVER, "offline", "serve", "--repo", repo, "--port", str(port), "--http-port", str(http_port)])
    try:
        wait_http(f"http://127.0.0.1:{http_port}/", proc, "quiver offline serve")
        body = {"features": ["driver_hourly_stats:avg_daily_trips"],
                "entities": {"driver_id": [1002], "event_timestamp": ["2024-05-01T13:00:00Z"]}}
        req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/historical", data=json.dumps(body).encode(),
                                     method="POST", headers={"content-type": "application/json"})
        import pyarrow as pa

        with urllib.request.urlopen(req, timeout=30) as resp:
            table = pa.ipc.open_stream(resp.read()).read_all()
        assert table.column("avg_daily_trips").to_pylist() == [20]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_concurrent_quiver_applies_to_one_s3_registry_lose_nothing(s3: dict, tmp_path: Path) -> None:
    """No lock on an object store: each apply writes conditionally and re-applies on a lost
    race. Two applies of different projects at once, three times over: all six projects land."""
    registry = f"s3://{s3['bucket']}/shared/registry.db"
    projects = []
    for round_ in range(3):
        repos = [quiver_repo(tmp_path, registry, name=f"r{round_}{side}", project=f"p{round_}{side}")
                 for side in "ab"]
        procs = [subprocess.Popen([str(QUIVER), "apply", "--repo", str(r)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for r in repos]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        projects += [f"p{round_}{side}" for side in "ab"]
    from feast import FeatureStore

    for p in projects:
        repo = tmp_path / f"r{p[1:]}"
        assert len(FeatureStore(repo_path=str(repo)).list_feature_views()) == 4, p


# --- The registry service over s3:// ------------------------------------------------------------

class RegistryService:
    def __init__(self, store: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = spawn(
            [QUIVER, "registry", "serve", "--store", store, "--host", "127.0.0.1", "--port",
             str(self.port), "--poll-interval", "200ms"])

    def __enter__(self) -> "RegistryService":
        wait_http(self.url + "/health", self.proc, "quiver registry serve")
        return self

    def __exit__(self, *_exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def version(self, project: str) -> int:
        status, _, body = self.get(f"/v1/projects/{project}")
        return json.loads(body)["version"] if status == 200 else 0

    def apply(self, project: str, base: int, content: str):
        body = json.dumps({"base_version": base, "files": [{"path": "features.yaml", "content": content}]})
        req = urllib.request.Request(f"{self.url}/v1/projects/{project}/apply", data=body.encode(),
                                     headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def test_registry_service_over_s3_snapshots_and_conflicts(s3: dict, tmp_path: Path) -> None:
    registry = f"s3://{s3['bucket']}/service/registry.db"
    # Feast writes the registry; the service serves a snapshot of it.
    repo = feast_repo(tmp_path, registry)
    run(FEAST_CLI, "apply", cwd=repo)
    defs = (ROOT / "examples/quickstart/features.yaml").read_text()
    assert "description: Hourly driver statistics" in defs

    # Two replicas on one object: only conditional writes keep them from losing changes.
    with RegistryService(registry) as a, RegistryService(registry) as b:
        status, headers, body = a.get("/v1/projects/quickstart/snapshot")
        assert status == 200 and body[8:12] == b"QVRS", (status, body[:100])
        version = a.version("quickstart")
        assert version == 1 and b.version("quickstart") == 1

        for round_ in range(4):
            results = {}

            def send(name, service):
                results[name] = service.apply(
                    "quickstart", version,
                    defs.replace("description: Hourly driver statistics",
                                 f"description: round {round_} by {name}"))

            threads = [threading.Thread(target=send, args=(n, s)) for n, s in (("a", a), ("b", b))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            statuses = sorted(r[0] for r in results.values())
            assert statuses == [200, 409], results
            winner = next(n for n, r in results.items() if r[0] == 200)
            loser = results["b" if winner == "a" else "a"][1]
            assert f"based on version {version}" in json.dumps(loser), loser
            version += 1
            assert results[winner][1]["version"] == version
            # Both replicas converge on the winner's version.
            deadline = time.time() + 10
            while not (a.version("quickstart") == version and b.version("quickstart") == version):
                assert time.time() < deadline, (a.version("quickstart"), b.version("quickstart"), version)
                time.sleep(0.1)

            # And the object holds the winner's change, as Feast reads it.
            from feast import FeatureStore

            view = FeatureStore(repo_path=str(repo)).get_feature_view("driver_hourly_stats")
            assert view.description == f"round {round_} by {winner}"

        # Materialization records (`quiver materialize --registry-url`) sent to both replicas at
        # once: intervals only accumulate, so both land, neither overwrites the other.
        results = {}

        def record(name, service, day):
            body = json.dumps({"intervals": [{"feature_view": "driver_hourly_stats",
                                              "start": f"2024-05-0{day}T00:00:00Z",
                                              "end": f"2024-05-0{day}T12:00:00Z"}]}).encode()
            req = urllib.request.Request(f"{service.url}/v1/projects/quickstart/materializations", data=body,
                                         headers={"content-type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    results[name] = r.status
            except urllib.error.HTTPError as e:
                results[name] = (e.code, e.read())

        threads = [threading.Thread(target=record, args=(n, s, d)) for n, s, d in (("a", a, 1), ("b", b, 2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {"a": 200, "b": 200}, results
        from feast import FeatureStore

        intervals = FeatureStore(repo_path=str(repo)).get_feature_view("driver_hourly_stats").materialization_intervals
        assert sorted(s.isoformat() for s, _ in intervals) == [
            "2024-05-01T00:00:00+00:00", "2024-05-02T00:00:00+00:00"]


# --- GCS -----------------------------------------------------------------------------------------

@pytest.fixture
def gcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    port = free_port()
    # No '-': object_store percent-encodes it in the path, which real GCS decodes and the
    # emulator's routes do not match.
    bucket = f"quiver{uuid.uuid4().hex[:12]}"
    proc = spawn([BIN / "gcp-storage-emulator", "start", "--host", "127.0.0.1", "--port", str(port),
                  "--in-memory", "--default-bucket", bucket])
    try:
        wait_http(f"http://127.0.0.1:{port}/", proc, "gcp-storage-emulator")
        # The switch Google's client libraries (and so Feast's GCS registry store) honour;
        # quiver's gs:// client honours it too.
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "quiver-test")
        monkeypatch.delenv("FEATURE_STORE_YAML_BASE64", raising=False)
        yield {"bucket": bucket}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_gcs_registry_round_trip(gcs: dict, tmp_path: Path) -> None:
    registry = f"gs://{gcs['bucket']}/feast/registry.pb"
    repo = feast_repo(tmp_path, registry)
    run(FEAST_CLI, "apply", cwd=repo)
    feast_view = feast_summary.summarize(str(repo))
    assert feast_view["feature_views"], "Feast reads back what it wrote to the emulator"

    done = run(QUIVER, "list", "--repo", repo, "--json", check=False)
    no_panic(done)
    if done.returncode != 0:
        # gcp-storage-emulator implements GCS's JSON API (what Feast's google-cloud-storage
        # uses), but its XML API, which object_store's GCS client speaks, answers without the
        # ETag and Last-Modified headers GCS sends (and ignores x-goog-if-generation-match).
        assert registry in done.stderr and "lacks headers" in done.stderr, done.stderr
        # quiver's own writes fail just as clearly, and exit non-zero.
        qrepo = quiver_repo(tmp_path, f"gs://{gcs['bucket']}/quiver/registry.pb")
        wrote = run(QUIVER, "apply", "--repo", qrepo, check=False)
        no_panic(wrote)
        assert wrote.returncode != 0 and "gs://" in wrote.stderr, wrote.stderr
        # And the registry service refuses to run on it rather than risk lost writes.
        store = f"gs://{gcs['bucket']}/service/registry.pb"
        served = run(QUIVER, "registry", "serve", "--store", store, "--host", "127.0.0.1", "--port", free_port(),
                     check=False, timeout=60)
        no_panic(served)
        assert served.returncode != 0 and store in served.stderr, served.stderr
        pytest.xfail("gcp-storage-emulator's XML API sends no ETag/Last-Modified: object_store's "
                     "GCS client cannot read it (Feast's GCS registry works against it)")
    assert json.loads(done.stdout) == feast_view
    qrepo = quiver_repo(tmp_path, f"gs://{gcs['bucket']}/quiver/registry.pb")
    quiver("apply", "--repo", qrepo)
    assert feast_summary.summarize(str(qrepo)) == {**EXPECTED, "on_demand_feature_views": []}


# --- Data sources in S3 --------------------------------------------------------------------------

def s3_sources_repo(tmp_path: Path, s3: dict, name: str) -> tuple:
    """A copy of the Feast repo whose driver and customer sources are in S3, reached through the
    sources' own `s3_endpoint_override` (no endpoint in the environment): the drivers as a
    folder of part files beside Spark's `_SUCCESS`, the customers as one object. Returns the
    repo and the driver rows."""
    import boto3
    import pandas as pd

    repo = feast_repo(tmp_path / name, "data/registry.db")
    t0 = pd.Timestamp("2024-05-01T00:00:00Z")
    # 300 drivers, 4 hourly rows each, hour 2 twice (the later `created` wins), one row per
    # driver after the window (which ends at 13:00, after the customers' rows at noon).
    rows = []
    for d in range(300):
        for h in (0, 1, 2, 2, 14):
            created = t0 + pd.Timedelta(hours=h, minutes=len(rows) % 7)
            rows.append({"driver_id": 1000 + d, "event_timestamp": t0 + pd.Timedelta(hours=h), "created": created,
                         "conv_rate": float((d * 7 + h * 3 + len(rows)) % 100) / 100, "acc_rate": 0.5,
                         "avg_daily_trips": d * 10 + h + len(rows) % 3, "recent_zones": [d % 5, h]})
    drivers = pd.DataFrame(rows)
    drivers["conv_rate"] = drivers["conv_rate"].astype("float32")
    drivers["acc_rate"] = drivers["acc_rate"].astype("float32")
    client = boto3.client("s3", endpoint_url=s3["endpoint"])
    half = len(drivers) // 2
    for i, part in enumerate((drivers.iloc[:half], drivers.iloc[half:])):
        path = tmp_path / f"{name}-part-{i}.parquet"
        part.to_parquet(path, index=False)
        client.upload_file(str(path), s3["bucket"], f"{name}/driver_stats/part-{i}.parquet")
    client.put_object(Bucket=s3["bucket"], Key=f"{name}/driver_stats/_SUCCESS", Body=b"")
    write_quickstart_parquet(tmp_path / f"{name}-local")
    client.upload_file(str(tmp_path / f"{name}-local/customer_profile.parquet"), s3["bucket"],
                       f"{name}/customer_profile.parquet")
    code = (repo / "feature_repo.py").read_text()
    override = f's3_endpoint_override="{s3["endpoint"]}",'
    code = code.replace('path="data/driver_stats.parquet",',
                        f'path="s3://{s3["bucket"]}/{name}/driver_stats", {override}')
    code = code.replace('path="data/customer_profile.parquet",',
                        f'path="s3://{s3["bucket"]}/{name}/customer_profile.parquet", {override}')
    (repo / "feature_repo.py").write_text(code)
    return repo, drivers


def feast_historical(repo: Path, entities, features: list, env: dict):
    """Feast's `get_historical_features` in a process of its own, as the `feast` commands run:
    a fresh s3fs and dask for each read."""
    import pandas as pd

    entities.to_parquet(repo / "feast_entities.parquet")
    script = (
        "import sys, pandas as pd\n"
        "from feast import FeatureStore\n"
        "entities = pd.read_parquet(sys.argv[2])\n"
        "FeatureStore(repo_path=sys.argv[1]).get_historical_features(\n"
        "    entity_df=entities, features=sys.argv[4].split(',')).to_df().to_parquet(sys.argv[3])\n"
    )
    run(sys.executable, "-c", script, repo, repo / "feast_entities.parquet", repo / "feast_out.parquet",
        ",".join(features), cwd=repo, env=env, timeout=300)
    return pd.read_parquet(repo / "feast_out.parquet")


def test_materialize_and_historical_read_s3_data_sources(s3: dict, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Feast and quiver materialize the same S3 sources (a folder of part files and a single
    object) into their own SQLite stores; Feast's `get_online_features` reads the same values
    from both. quiver's historical retrieval over the same sources matches Feast's."""
    import pandas as pd
    from feast import FeatureStore

    monkeypatch.delenv("FEAST_S3_ENDPOINT_URL")
    env = {k: v for k, v in os.environ.items() if k != "FEAST_S3_ENDPOINT_URL"}
    start, end = "2024-05-01T00:00:00", "2024-05-01T13:00:00"
    refs = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips",
            "driver_hourly_stats:recent_zones", "customer_profile:tier", "customer_profile:lifetime_value"]

    answers = {}
    for who in ("feast", "quiver"):
        repo, drivers = s3_sources_repo(tmp_path, s3, who)
        run(FEAST_CLI, "apply", cwd=repo, env=env)
        if who == "feast":
            run(FEAST_CLI, "materialize", start, end, "--views", "driver_hourly_stats", "--views",
                "customer_profile", cwd=repo, env=env, timeout=300)
        else:
            out = quiver("materialize", "--repo", repo, "--views", "driver_hourly_stats,customer_profile",
                         start, end, env=env)
            assert "driver_hourly_stats" in out, out
        ids = sorted(drivers["driver_id"].unique().tolist())
        answers[who] = FeatureStore(repo_path=str(repo)).get_online_features(
            features=refs, entity_rows=[{"driver_id": d, "customer_id": c}
                                        for d, c in zip(ids, ["c1", "c2"] * len(ids))]).to_dict()

    # The latest row in the window per driver, ties on event time broken by created.
    inside = drivers[drivers["event_timestamp"] < pd.Timestamp(end + "Z")]
    latest = inside.sort_values(["driver_id", "event_timestamp", "created"]).groupby("driver_id").tail(1)
    assert answers["quiver"]["avg_daily_trips"] == latest.sort_values("driver_id")["avg_daily_trips"].tolist()
    assert answers["quiver"]["tier"][:2] == ["gold", "silver"]
    assert answers["quiver"] == answers["feast"]

    # Historical retrieval from the same S3 sources, against Feast's.
    repo = tmp_path / "quiver" / "feast_repo"
    entities = pd.DataFrame({
        "driver_id": pd.Series([1000, 1001, 1299, 1005], dtype="int64"),
        "event_timestamp": pd.to_datetime(["2024-05-01T00:30:00Z", "2024-05-01T02:30:00Z",
                                           "2024-05-01T15:00:00Z", "2024-04-30T23:00:00Z"]),
    })
    entities.to_parquet(repo / "entities.parquet")
    features = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"]
    quiver("historical", "--repo", repo, "--entities", repo / "entities.parquet",
           "--features", ",".join(features), "--out", repo / "out.parquet", env=env)
    ours = pd.read_parquet(repo / "out.parquet").sort_values(["driver_id", "event_timestamp"])
    feast = feast_historical(repo, entities, features, env).sort_values(["driver_id", "event_timestamp"])
    def cells(frame, column):
        return [None if pd.isna(x) else round(float(x), 6) for x in frame[column]]

    # Feast's file store drops the entity row that no feature row matches (driver 1005, before
    # any data); quiver keeps it, with nulls (compat/tests/test_historical_compat.py).
    assert len(ours) == len(entities) and len(feast) == len(entities) - 1
    kept = ours[ours["driver_id"] != 1005]
    for column in ("conv_rate", "avg_daily_trips"):
        assert cells(kept, column) == cells(feast, column), column
    assert cells(ours[ours["driver_id"] == 1005], "avg_daily_trips") == [None]

    # The entity table and the result in S3 too, as a pipeline step keeps them: the entities as
    # a prefix of two part files, the result uploaded as one object; the endpoint from the
    # environment this time (FEAST_S3_ENDPOINT_URL, as Feast reads it).
    import boto3
    client = boto3.client("s3", endpoint_url=s3["endpoint"])
    for i, part in enumerate((entities.iloc[:2], entities.iloc[2:])):
        path = repo / f"entities-{i}.parquet"
        part.to_parquet(path, index=False)
        client.upload_file(str(path), s3["bucket"], f"pipeline/entities/part-{i}.parquet")
    client.put_object(Bucket=s3["bucket"], Key="pipeline/entities/_SUCCESS", Body=b"")
    env = {**env, "FEAST_S3_ENDPOINT_URL": s3["endpoint"]}
    out = quiver("historical", "--repo", repo, "--entities", f"s3://{s3['bucket']}/pipeline/entities/",
                 "--features", ",".join(features), "--out", f"s3://{s3['bucket']}/pipeline/training.parquet", env=env)
    assert f"s3://{s3['bucket']}/pipeline/training.parquet" in out, out
    client.download_file(s3["bucket"], "pipeline/training.parquet", str(repo / "from_s3.parquet"))
    remote = pd.read_parquet(repo / "from_s3.parquet")
    # Input order is kept: the parts in their order, rows in theirs.
    assert remote["driver_id"].tolist() == entities["driver_id"].tolist()
    remote = remote.sort_values(["driver_id", "event_timestamp"])
    for column in ("conv_rate", "avg_daily_trips"):
        assert cells(remote, column) == cells(ours, column), column
    # An entity table that is not there, and an output that names a folder: named, no object.
    done = run(QUIVER, "historical", "--repo", repo, "--entities", f"s3://{s3['bucket']}/pipeline/nothing.parquet",
               "--features", ",".join(features), "--out", f"s3://{s3['bucket']}/pipeline/never.parquet", env=env, check=False)
    no_panic(done)
    assert done.returncode != 0 and "entity table" in done.stderr and "nothing.parquet" in done.stderr, done.stderr
    done = run(QUIVER, "historical", "--repo", repo, "--entities", f"s3://{s3['bucket']}/pipeline/entities/",
               "--features", ",".join(features), "--out", f"s3://{s3['bucket']}/pipeline/out/", env=env, check=False)
    no_panic(done)
    assert done.returncode != 0 and "not a folder" in done.stderr, done.stderr
    listed = client.list_objects_v2(Bucket=s3["bucket"], Prefix="pipeline/")["Contents"]
    assert not [o["Key"] for o in listed if "never" in o["Key"] or "/out" in o["Key"]], listed

    # A source object that is not there: named, non-zero, no panic, nothing recorded.
    code = (repo / "feature_repo.py").read_text()
    (repo / "feature_repo.py").write_text(code.replace("quiver/customer_profile.parquet", "quiver/gone.parquet"))
    run(FEAST_CLI, "apply", cwd=repo, env=env)
    done = run(QUIVER, "materialize", "--repo", repo, "--views", "customer_profile", start, end,
               env=env, check=False)
    no_panic(done)
    assert done.returncode != 0 and f"s3://{s3['bucket']}/quiver/gone.parquet" in done.stderr, done.stderr


def test_push_to_offline_appends_to_s3_sources(s3: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`POST /push` with `to: offline` on a source in S3: a prefix gets a new part object, which
    Feast's historical retrieval then reads; a single object is extended in place, and pushes
    from two servers at once lose no rows (each write is conditional on the ETag it read)."""
    import boto3
    import pandas as pd
    import pyarrow.parquet as pq

    monkeypatch.delenv("FEAST_S3_ENDPOINT_URL")
    env = {k: v for k, v in os.environ.items() if k != "FEAST_S3_ENDPOINT_URL"}
    repo, drivers = s3_sources_repo(tmp_path, s3, "push")
    run(FEAST_CLI, "apply", cwd=repo, env=env)

    def body(driver: int, hour: int, conv_rate: float) -> dict:
        # The push source also feeds driver_hourly_stats_fresh: only the columns both views have.
        at = f"2024-05-01T{hour:02d}:00:00Z"
        return {"push_source_name": "driver_stats_push", "to": "offline",
                "df": {"driver_id": [driver], "event_timestamp": [at], "created": [at], "conv_rate": [conv_rate],
                       "acc_rate": [0.5]}}

    with Sidecar(repo, "--enable-push") as sidecar:
        status, answer = sidecar.post("/push", body(1000, 20, 0.125))
        assert status == 200, answer
        prefix = f"s3://{s3['bucket']}/push/driver_stats/push-"
        assert answer["offline"].startswith(prefix), answer
        status, answer = sidecar.post("/push", body(5000, 20, 0.25))
        assert status == 200, answer
    client = boto3.client("s3", endpoint_url=s3["endpoint"])
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3["bucket"], Prefix="push/driver_stats/")["Contents"]]
    assert len([k for k in keys if k.split("/")[-1].startswith("push-")]) == 2, keys

    entities = pd.DataFrame({"driver_id": pd.Series([1000, 5000, 1000], dtype="int64"),
                             "event_timestamp": pd.to_datetime(["2024-05-01T21:00:00Z", "2024-05-01T21:00:00Z",
                                                                "2024-05-01T03:00:00Z"])})
    got = feast_historical(repo, entities, ["driver_hourly_stats:conv_rate"], env)
    got = [round(float(x), 6) for x in got.sort_values(["driver_id", "event_timestamp"])["conv_rate"]]
    before = drivers[(drivers["driver_id"] == 1000) & (drivers["event_timestamp"] <= pd.Timestamp("2024-05-01T03:00:00Z"))]
    latest_before = round(float(before.sort_values(["event_timestamp", "created"])["conv_rate"].iloc[-1]), 6)
    assert got == [latest_before, 0.125, 0.25], got

    # A single-object source: two servers push ten times each, at once.
    single = f"s3://{s3['bucket']}/push/one.parquet"
    client.copy_object(Bucket=s3["bucket"], Key="push/one.parquet",
                       CopySource={"Bucket": s3["bucket"], "Key": "push/driver_stats/part-0.parquet"})
    code = (repo / "feature_repo.py").read_text()
    (repo / "feature_repo.py").write_text(code.replace(f"s3://{s3['bucket']}/push/driver_stats", single))
    run(FEAST_CLI, "apply", cwd=repo, env=env)
    start_rows = pq.read_table(tmp_path / "push-part-0.parquet").num_rows
    with Sidecar(repo, "--enable-push") as a, Sidecar(repo, "--enable-push") as b:
        failures = []

        def pushes(server: Sidecar, base: int) -> None:
            for i in range(10):
                status, answer = server.post("/push", body(base + i, 22, i / 16))
                if status != 200 or answer.get("offline") != single:
                    failures.append((status, answer))

        threads = [threading.Thread(target=pushes, args=(s, base)) for s, base in ((a, 6000), (b, 7000))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failures, failures
    local = tmp_path / "one.parquet"
    client.download_file(s3["bucket"], "push/one.parquet", str(local))
    table = pq.read_table(local)
    assert table.num_rows == start_rows + 20, table.num_rows
    pushed = sorted(d for d in table.column("driver_id").to_pylist() if d >= 6000)
    assert pushed == list(range(6000, 6010)) + list(range(7000, 7010))


# --- Errors --------------------------------------------------------------------------------------

def test_object_store_errors_are_clear(s3: dict, tmp_path: Path) -> None:
    # A bucket that does not exist: named, for reads and writes, and for the service.
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/registry.db"
    repo = quiver_repo(tmp_path, missing)
    for args in (["list", "--repo", repo], ["apply", "--repo", repo],
                 ["registry", "serve", "--store", missing, "--port", str(free_port())]):
        done = run(QUIVER, *args, check=False, timeout=60)
        no_panic(done)
        assert done.returncode != 0, (args, done.stdout)
        assert missing in done.stderr and "does not exist" in done.stderr, (args, done.stderr)

    # A registry object that does not exist yet: list and serve say so.
    absent = f"s3://{s3['bucket']}/nothing/registry.db"
    set_registry(repo, absent)
    for args in (["list", "--repo", repo], ["serve", "--repo", repo, "--port", str(free_port())]):
        done = run(QUIVER, *args, check=False, timeout=60)
        no_panic(done)
        assert done.returncode != 0 and absent in done.stderr, (args, done.stderr)

    # An endpoint nobody listens on: fails within seconds, naming the URI and the endpoint.
    dead = f"http://127.0.0.1:{free_port()}"
    set_registry(repo, f"s3://{s3['bucket']}/registry.db")
    started = time.time()
    done = run(QUIVER, "list", "--repo", repo, check=False, env={**os.environ, "FEAST_S3_ENDPOINT_URL": dead},
               timeout=60)
    no_panic(done)
    assert done.returncode != 0 and f"s3://{s3['bucket']}/registry.db" in done.stderr and dead in done.stderr, done.stderr
    assert time.time() - started < 30

    # A malformed URI: what was expected.
    set_registry(repo, f"s3://{s3['bucket']}/")
    done = run(QUIVER, "apply", "--repo", repo, check=False)
    no_panic(done)
    assert done.returncode != 0 and "BUCKET/PATH/registry.db" in done.stderr, done.stderr
