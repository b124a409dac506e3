"""KServe V2 over gRPC through the enriching sidecar, with the real KServe Python model server.

The sidecar serves `inference.GRPCInferenceService` on --grpc-port and forwards to the KServe
model server's gRPC port (--upstream-grpc); the requests are sent with KServe's own Python
client (`kserve.InferenceGRPCClient`, and the grpcio stub for the other calls) from the KServe
venv (compat/kserve/grpc_client.py). Requests carry entity ids only, as typed `contents` or as
`raw_input_contents`; the predictions must equal the model applied to the features stored in
Redis. Bad requests get the gRPC status that names the tensor; a model server that is down is
UNAVAILABLE with the cause.
"""

import json
import subprocess
from pathlib import Path

# The REST enrichment test's fixtures and helpers: the same Redis, repo, model servers, data.
from test_kserve_enrich import (  # noqa: F401 (fixtures are used by name)
    CUSTOMERS,
    DRIVERS,
    EXAMPLE,
    MODELS,
    QUIVER,
    ROOT,
    WEIGHTS,
    close,
    features_of,
    free_port,
    http,
    kserve_python,
    procs,
    redis_port,
    repo,
    store_features,
    wait_http,
    weighted,
)

CLIENT = ROOT / "compat" / "kserve" / "grpc_client.py"


def grpc_model_server(procs, python, tmp_path, kind, name, *extra):
    """A KServe model server with its gRPC server on; (http port, gRPC port)."""
    port, grpc_port = free_port(), free_port()
    p = procs.start([python, MODELS, kind, "--model_name", name, "--http_port", str(port),
                     "--enable_grpc", "true", "--grpc_port", str(grpc_port), *extra], cwd=tmp_path)
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", p, f"the KServe model server ({kind})")
    return p, grpc_port


def grpc_sidecar(procs, repo, enrich: Path, upstream_grpc: int):
    """quiver serve --enrich with a gRPC port; (Feast API port on loopback, gRPC port)."""
    port, grpc_port, api = free_port(), free_port(), free_port()
    p = procs.start([QUIVER, "serve", "--repo", str(repo), "--port", str(port), "--enable-push",
                     "--enrich", str(enrich), "--upstream", "http://127.0.0.1:1",
                     "--grpc-port", str(grpc_port), "--api-port", str(api),
                     "--upstream-grpc", f"http://127.0.0.1:{upstream_grpc}"], cwd=repo)
    wait_http(f"http://127.0.0.1:{api}/health", p, "quiver serve --enrich --grpc-port")
    return api, grpc_port


def calls(python, port, *calls):
    """Runs the calls with KServe's client; their results."""
    out = subprocess.run([python, CLIENT, f"127.0.0.1:{port}"], input=json.dumps(list(calls)),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout)


def infer(rows, raw=False, model="driver-ranker", id="g1", driver_type="INT64"):
    return {"call": "infer", "model": model, "id": id, "raw": raw, "inputs": [
        {"name": "driver_id", "shape": [len(rows)], "datatype": driver_type, "data": [d for d, _ in rows]},
        {"name": "customer_id", "shape": [len(rows), 1], "datatype": "BYTES", "data": [[c] for _, c in rows]},
    ]}


def test_v2_grpc_model_infer_enriches_contents_and_raw_for_a_kserve_model(tmp_path, kserve_python, repo, procs):
    model, model_grpc = grpc_model_server(procs, kserve_python, tmp_path, "weighted", "driver-ranker",
                                          "--weights", ",".join(str(w) for w in WEIGHTS))
    api, port = grpc_sidecar(procs, repo, EXAMPLE, model_grpc)
    store_features(api)
    rows = [(1001, "C1"), (1002, "C2"), (1003, "C1"), (1001, "C2")]
    expected = [weighted(features_of(d, c)) for d, c in rows]

    contents, raw, live, ready, model_ready, metadata, server = calls(
        kserve_python, port,
        infer(rows, id="typed"),
        infer(rows, raw=True, id="raw"),
        {"call": "live"}, {"call": "ready"},
        {"call": "model_ready", "model": "driver-ranker"},
        {"call": "model_metadata", "model": "driver-ranker"},
        {"call": "server_metadata"},
    )
    # ModelInfer with typed contents: the model saw the stored features, one typed tensor each.
    assert contents["ok"], contents
    assert contents["model_name"] == "driver-ranker" and contents["id"] == "typed", contents
    got = contents["outputs"]["predictions"]
    assert len(got) == len(expected) and all(close(g, e) for g, e in zip(got, expected)), (got, expected)
    # The same request with raw_input_contents: the features are added raw too.
    assert raw["ok"], raw
    got = raw["outputs"]["predictions"]
    assert raw["id"] == "raw" and all(close(g, e) for g, e in zip(got, expected)), (got, expected)
    # The other calls pass through to the model server.
    assert live == {"ok": True, "answer": {"live": True}}, live
    assert ready == {"ok": True, "answer": {"ready": True}}, ready
    assert model_ready == {"ok": True, "answer": {"ready": True}}, model_ready
    assert metadata["ok"] and metadata["answer"]["name"] == "driver-ranker", metadata
    assert server["ok"] and server["answer"]["name"] == "kserve", server

    # Bad requests: the gRPC status, naming the tensor or field; nothing reaches the model.
    missing_entity = infer(rows)
    missing_entity["inputs"].pop()
    wrong_shape = infer([(1001, "C1")])
    wrong_shape["inputs"][0]["shape"] = [1, 2]
    wrong_shape["inputs"][0]["data"] = [[1001, 1002]]
    unknown_feature, no_entity, wrong_type, bad_shape, unknown_model, wrong_type_raw = calls(
        kserve_python, port,
        infer([(4242, "C1")]),
        missing_entity,
        infer([(1001, "C1")], driver_type="FP32"),
        wrong_shape,
        infer(rows, model="other-model"),
        infer([(1001, "C1")], driver_type="FP32", raw=True),
    )
    assert unknown_feature["code"] == "FAILED_PRECONDITION", unknown_feature
    assert "row 0" in unknown_feature["details"] and "conv_rate" in unknown_feature["details"], unknown_feature
    assert no_entity["code"] == "INVALID_ARGUMENT", no_entity
    assert "no tensor named customer_id" in no_entity["details"], no_entity
    assert wrong_type["code"] == "INVALID_ARGUMENT", wrong_type
    assert "inputs[name=driver_id].datatype: FP32" in wrong_type["details"], wrong_type
    assert wrong_type_raw["code"] == "INVALID_ARGUMENT", wrong_type_raw
    assert "inputs[name=driver_id].datatype: FP32" in wrong_type_raw["details"], wrong_type_raw
    assert bad_shape["code"] == "INVALID_ARGUMENT", bad_shape
    assert "inputs[name=driver_id].shape: [1, 2]" in bad_shape["details"], bad_shape
    assert unknown_model["code"] == "NOT_FOUND" and "other-model" in unknown_model["details"], unknown_model

    # Metrics: the gRPC requests under protocol="grpc".
    _, body = http("GET", f"http://127.0.0.1:{api}/metrics")
    text = body.decode()
    assert 'quiver_enrich_requests_total{model="driver-ranker",protocol="grpc",status="2xx"} 2' in text, text
    assert 'quiver_enrich_requests_total{model="driver-ranker",protocol="grpc",status="4xx"} 5' in text, text
    assert 'quiver_enrich_rows_total{model="driver-ranker"} 8' in text, text

    # The model server down: UNAVAILABLE, with the cause.
    model.kill()
    model.wait()
    (down,) = calls(kserve_python, port, infer(rows))
    assert down["code"] == "UNAVAILABLE", down
    assert f"model server gRPC http://127.0.0.1:{model_grpc}" in down["details"], down
    assert "refused" in down["details"].lower(), down


SKLEARN_CONFIG = """
models:
  ranker-sk:
    feature_service: driver_ranking
    entities: [driver_id, customer_id]
    order: [conv_rate, acc_rate, lifetime_value]
    v2: {layout: stacked, name: input-0, datatype: FP64}
    missing: {fill: 0}
"""


def test_sklearn_model_over_grpc_predicts_from_stored_features_in_one_stacked_tensor(
        tmp_path, kserve_python, repo, procs):
    model_dir = tmp_path / "sk"
    out = subprocess.run([kserve_python, MODELS, "train", "--model_dir", str(model_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    *coef, intercept = [float(x) for x in out.stdout.strip().splitlines()[-1].split(",")]
    _, model_grpc = grpc_model_server(procs, kserve_python, tmp_path, "sklearn", "ranker-sk",
                                      "--model_dir", str(model_dir))
    config = tmp_path / "enrich.yaml"
    config.write_text(SKLEARN_CONFIG)
    api, port = grpc_sidecar(procs, repo, config, model_grpc)
    store_features(api)

    # 9999 is not stored: its driver features are filled with 0.
    rows = [(1001, "C1"), (1002, "C2"), (9999, "C2")]

    def x_of(d, c):
        conv, acc = DRIVERS.get(d, (0.0, 0.0))
        return [conv, acc, CUSTOMERS[c][1]]

    expected = [sum(k * v for k, v in zip(coef, x_of(d, c))) + intercept for d, c in rows]
    typed, raw = calls(kserve_python, port, infer(rows, model="ranker-sk"),
                       infer(rows, model="ranker-sk", raw=True))
    for answer in (typed, raw):
        assert answer["ok"], answer
        got = answer["outputs"]["predictions"]
        assert all(close(g, e) for g, e in zip(got, expected)), (got, expected)
