"""KServe enrichment end to end, with the real KServe Python model server as the upstream.

The sidecar (`quiver serve --enrich FILE --upstream URL`) stands in front of model servers run
by `kserve.ModelServer` (compat/kserve/models.py, in the KServe venv that
compat/setup-kserve-venv.sh makes): a `kserve.Model` returning a weighted sum of its inputs,
behind examples/kserve/enrich.yaml used as it is, and a scikit-learn model trained here, loaded
and served the way KServe's sklearn server does. The features live in a redis-server of the
test's own (the examples/quickstart definitions, applied by quiver and written through the
sidecar's /write-to-online-store). Requests carry entity ids only; the predictions must equal
the model applied to the stored features, for V1 (:predict, :explain) and V2 REST.
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
KSERVE_VENV = Path(
    os.environ.get("QUIVER_KSERVE_VENV", Path.home() / ".cache" / "quiver-ci" / "kserve-venv")
)
KSERVE_PYTHON = KSERVE_VENV / "bin" / "python"
MODELS = ROOT / "compat" / "kserve" / "models.py"
EXAMPLE = ROOT / "examples" / "kserve" / "enrich.yaml"

NOW = int(time.time())

# What the test stores (driver_hourly_stats, customer_profile); floats exact in float32.
DRIVERS = {1001: (0.5, 0.75), 1002: (0.25, 0.125), 1003: (1.0, 0.5)}
CUSTOMERS = {
    "C1": ("gold", 1234.5, True, 1_700_000_000),
    "C2": ("silver", 88.25, False, 1_600_000_000),
}
# The weighted model's weights for the numeric values of driver_ranking, in its order:
# conv_rate, acc_rate, (tier skipped: a string), lifetime_value, is_vip, signup_ts.
WEIGHTS = [2.0, -3.0, 0.01, 5.0, 1e-9]


def features_of(driver, customer):
    conv, acc = DRIVERS[driver]
    tier, ltv, vip, signup = CUSTOMERS[customer]
    return [conv, acc, tier, ltv, vip, signup]


def weighted(row):
    numeric = [float(v) for v in row if not isinstance(v, str)]
    return sum(w * v for w, v in zip(WEIGHTS, numeric))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_http(url, proc, what, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {Path(proc.log).read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} did not answer {url} within {seconds}s")


@pytest.fixture
def kserve_python():
    if not KSERVE_PYTHON.exists():
        message = f"no KServe venv at {KSERVE_VENV}: run compat/setup-kserve-venv.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return KSERVE_PYTHON


@pytest.fixture
def redis_port(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait()


class Procs:
    """Servers of a test, their output in log files (a pipe nobody reads would fill and stall
    a server that logs every request, as KServe's does)."""

    def __init__(self):
        self.procs = []

    def start(self, args, cwd):
        log = Path(cwd) / f"server-{len(self.procs)}.log"
        with open(log, "wb") as out:
            p = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        p.log = log
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.stop()


@pytest.fixture
def repo(tmp_path: Path, redis_port: int) -> Path:
    """examples/quickstart's definitions on the test's redis-server, applied."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "quickstart", repo)
    (repo / "data" / "registry.db").unlink(missing_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: quickstart\nregistry: data/registry.db\nprovider: local\n"
        f"online_store:\n  type: redis\n  connection_string: \"127.0.0.1:{redis_port}\"\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    out = subprocess.run([QUIVER, "apply", "--repo", str(repo)], cwd=repo, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return repo


def model_server(procs, python, tmp_path, kind, name, *extra):
    port = free_port()
    p = procs.start([python, MODELS, kind, "--model_name", name, "--http_port", str(port),
                     "--grpc_port", str(free_port()), *extra], cwd=tmp_path)
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", p, f"the KServe model server ({kind})")
    return port


def sidecar(procs, repo, enrich: Path, upstream: int):
    """quiver serve --enrich; (serving port, Feast API port on loopback)."""
    port, api = free_port(), free_port()
    p = procs.start([QUIVER, "serve", "--repo", str(repo), "--port", str(port), "--enable-push",
                     "--enrich", str(enrich), "--upstream", f"http://127.0.0.1:{upstream}",
                     "--api-port", str(api)], cwd=repo)
    wait_http(f"http://127.0.0.1:{port}/health", p, "quiver serve --enrich")
    wait_http(f"http://127.0.0.1:{api}/health", p, "quiver serve --enrich --api-port")
    return port, api


def store_features(port: int):
    base = f"http://127.0.0.1:{port}"
    ids = list(DRIVERS)
    status, body = http("POST", f"{base}/write-to-online-store", {
        "feature_view_name": "driver_hourly_stats",
        "df": {
            "driver_id": ids,
            "event_timestamp": [NOW - 60] * len(ids),
            "created": [NOW - 60] * len(ids),
            "conv_rate": [DRIVERS[d][0] for d in ids],
            "acc_rate": [DRIVERS[d][1] for d in ids],
            "avg_daily_trips": [10] * len(ids),
            "recent_zones": [[1, 2]] * len(ids),
        },
    })
    assert status == 200, body
    cs = list(CUSTOMERS)
    status, body = http("POST", f"{base}/write-to-online-store", {
        "feature_view_name": "customer_profile",
        "df": {
            "customer_id": cs,
            "event_timestamp": [NOW - 60] * len(cs),
            "tier": [CUSTOMERS[c][0] for c in cs],
            "lifetime_value": [CUSTOMERS[c][1] for c in cs],
            "is_vip": [CUSTOMERS[c][2] for c in cs],
            "signup_ts": [CUSTOMERS[c][3] for c in cs],
        },
    })
    assert status == 200, body


def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def test_example_config_enriches_v1_and_v2_for_a_kserve_model(tmp_path, kserve_python, repo, procs):
    model_port = model_server(procs, kserve_python, tmp_path, "weighted", "driver-ranker",
                              "--weights", ",".join(str(w) for w in WEIGHTS))
    port, api = sidecar(procs, repo, EXAMPLE, model_port)
    base = f"http://127.0.0.1:{port}"
    store_features(api)
    rows = [(1001, "C1"), (1002, "C2"), (1003, "C1"), (1001, "C2")]
    expected = [weighted(features_of(d, c)) for d, c in rows]

    # V1 :predict: instances of entity ids in, the model's answer back unchanged.
    status, body = http("POST", f"{base}/v1/models/driver-ranker:predict",
                        {"instances": [{"driver_id": d, "customer_id": c} for d, c in rows]})
    assert status == 200, body
    got = json.loads(body)["predictions"]
    assert len(got) == len(expected) and all(close(g, e) for g, e in zip(got, expected)), (got, expected)

    # V1 :explain goes the same way: the model saw the features in the service's order.
    status, body = http("POST", f"{base}/v1/models/driver-ranker:explain",
                        {"instances": [{"driver_id": 1001, "customer_id": "C1"}]})
    assert status == 200, body
    products = json.loads(body)["explanations"][0]
    numeric = [float(v) for v in features_of(1001, "C1") if not isinstance(v, str)]
    assert all(close(p, w * v) for p, w, v in zip(products, WEIGHTS, numeric)), products

    # V2 REST: entity-id tensors in (INT64 [n], BYTES [n, 1]), one typed tensor per feature out.
    status, body = http("POST", f"{base}/v2/models/driver-ranker/infer", {
        "id": "req-1",
        "inputs": [
            {"name": "driver_id", "shape": [len(rows)], "datatype": "INT64", "data": [d for d, _ in rows]},
            {"name": "customer_id", "shape": [len(rows), 1], "datatype": "BYTES", "data": [[c] for _, c in rows]},
        ],
    })
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model_name"] == "driver-ranker" and answer["id"] == "req-1", answer
    got = answer["outputs"][0]["data"]
    assert all(close(g, e) for g, e in zip(got, expected)), (got, expected)

    # KServe's reads pass through to the model server.
    status, body = http("GET", f"{base}/v2/health/ready")
    assert status == 200 and json.loads(body)["ready"] is True, body
    status, body = http("GET", f"{base}/v2/models/driver-ranker")
    assert status == 200 and json.loads(body)["name"] == "driver-ranker", body
    status, body = http("GET", f"{base}/v2/models/driver-ranker/ready")
    assert status == 200, body
    status, body = http("GET", f"{base}/v1/models/driver-ranker")
    assert status == 200 and json.loads(body)["ready"] is True, body

    # Feast's API is not on the serving port (whoever may call the model must not read features
    # directly, nor write them): it is on the loopback --api-port.
    request = {"feature_service": "driver_ranking", "entities": {"driver_id": [1001], "customer_id": ["C1"]}}
    status, body = http("POST", f"{base}/get-online-features", request)
    assert status == 404 and b"--api-port" in body, body
    status, body = http("POST", f"{base}/write-to-online-store", {"feature_view_name": "driver_hourly_stats", "df": {}})
    assert status == 404, body
    status, body = http("POST", f"http://127.0.0.1:{api}/get-online-features", request)
    assert status == 200, body
    status, body = http("GET", f"{base}/metrics")
    assert status == 200 and b"quiver_enrich_requests_total" in body, body

    # Bad requests: 4xx naming what is wrong; nothing reaches the model.
    status, body = http("POST", f"{base}/v1/models/driver-ranker:predict",
                        {"instances": [{"driver_id": 4242, "customer_id": "C1"}]})
    assert status == 422 and "instances[0]" in body.decode() and "conv_rate" in body.decode(), body
    status, body = http("POST", f"{base}/v1/models/driver-ranker:predict", {"instances": [{"driver_id": 1001}]})
    assert status == 400 and "instances[0].customer_id" in body.decode(), body
    status, body = http("POST", f"{base}/v1/models/driver-ranker:predict", {"inputs": [[1]]})
    assert status == 400 and "instances" in body.decode(), body
    status, body = http("POST", f"{base}/v1/models/driver-ranker:predict",
                        {"instances": [{"driver_id": "x", "customer_id": "C1"}]})
    assert status in (400, 422) and "instances[0].driver_id" in body.decode(), body
    status, body = http("POST", f"{base}/v2/models/driver-ranker/infer", {"inputs": [
        {"name": "driver_id", "shape": [1], "datatype": "FP32", "data": [1.5]},
        {"name": "customer_id", "shape": [1], "datatype": "BYTES", "data": ["C1"]},
    ]})
    assert status == 400 and "inputs[name=driver_id]" in body.decode(), body
    status, body = http("POST", f"{base}/v2/models/driver-ranker/infer", {"inputs": [
        {"name": "driver_id", "shape": [2], "datatype": "INT64", "data": [1001]},
        {"name": "customer_id", "shape": [1], "datatype": "BYTES", "data": ["C1"]},
    ]})
    assert status == 400 and "driver_id" in body.decode(), body
    status, body = http("POST", f"{base}/v1/models/other-model:predict", {"instances": [{}]})
    assert status == 404 and "other-model" in body.decode(), body
    status, body = http("POST", f"{base}/v1/models/driver-ranker:predict", b"{not json")
    assert status == 400, body

    # Metrics per configured model.
    status, body = http("GET", f"{base}/metrics")
    text = body.decode()
    assert 'quiver_enrich_requests_total{model="driver-ranker",protocol="v1",status="2xx"} 2' in text, text
    assert 'quiver_enrich_requests_total{model="driver-ranker",protocol="v2",status="2xx"} 1' in text
    assert 'quiver_enrich_rows_total{model="driver-ranker"} 9' in text
    assert 'quiver_enrich_missing_features_total{model="driver-ranker"}' in text
    assert 'quiver_enrich_added_seconds_count{model="driver-ranker"}' in text


SKLEARN_CONFIG = """
models:
  ranker-sk:
    feature_service: driver_ranking
    entities: [driver_id, customer_id]
    order: [conv_rate, acc_rate, lifetime_value]
    v2: {layout: stacked, name: input-0, datatype: FP64}
    missing: {fill: 0}
"""


def test_sklearn_model_served_by_kserve_predicts_from_stored_features(tmp_path, kserve_python, repo, procs):
    model_dir = tmp_path / "sk"
    out = subprocess.run([kserve_python, MODELS, "train", "--model_dir", str(model_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    *coef, intercept = [float(x) for x in out.stdout.strip().splitlines()[-1].split(",")]
    model_port = model_server(procs, kserve_python, tmp_path, "sklearn", "ranker-sk", "--model_dir", str(model_dir))
    config = tmp_path / "enrich.yaml"
    config.write_text(SKLEARN_CONFIG)
    port, api = sidecar(procs, repo, config, model_port)
    base = f"http://127.0.0.1:{port}"
    store_features(api)

    def predict(x):
        return sum(c * v for c, v in zip(coef, x)) + intercept

    # 9999 is not stored: its driver features are filled with 0.
    rows = [(1001, "C1"), (1002, "C2"), (9999, "C2")]
    def x_of(d, c):
        conv, acc = DRIVERS.get(d, (0.0, 0.0))
        return [conv, acc, CUSTOMERS[c][1]]
    expected = [predict(x_of(d, c)) for d, c in rows]

    status, body = http("POST", f"{base}/v1/models/ranker-sk:predict",
                        {"instances": [{"driver_id": d, "customer_id": c} for d, c in rows]})
    assert status == 200, body
    got = json.loads(body)["predictions"]
    assert all(close(g, e) for g, e in zip(got, expected)), (got, expected)

    status, body = http("POST", f"{base}/v2/models/ranker-sk/infer", {"inputs": [
        {"name": "driver_id", "shape": [len(rows)], "datatype": "INT64", "data": [d for d, _ in rows]},
        {"name": "customer_id", "shape": [len(rows)], "datatype": "BYTES", "data": [c for _, c in rows]},
    ]})
    assert status == 200, body
    got = json.loads(body)["outputs"][0]["data"]
    assert all(close(g, e) for g, e in zip(got, expected)), (got, expected)

    status, body = http("GET", f"{base}/metrics")
    assert 'quiver_enrich_missing_features_total{model="ranker-sk"} 4' in body.decode(), body.decode()


def test_config_that_does_not_fit_the_registry_is_refused_before_serving(tmp_path, repo):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "models:\n  m:\n    feature_service: driver_ranking\n    entities: [driver_id]\n"
        "    v2: {layout: stacked}\n"
    )
    out = subprocess.run([QUIVER, "serve", "--repo", str(repo), "--port", str(free_port()),
                          "--enrich", str(config), "--upstream", "http://127.0.0.1:1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "models.m.entities" in out.stderr and "customer_id" in out.stderr, out.stderr
    assert "models.m.v2" in out.stderr and "tier" in out.stderr, out.stderr
    config.write_text("models:\n  m:\n    feature_service: driver_ranking\n    entities: [driver_id]\n    missing: maybe\n")
    out = subprocess.run([QUIVER, "serve", "--repo", str(repo), "--enrich", str(config),
                          "--upstream", "http://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and f"{config}:5: models.m.missing" in out.stderr, out.stderr
