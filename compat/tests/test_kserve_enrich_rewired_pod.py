"""The injector's enrichment rewiring, run: the pod it produces, started as processes on loopback.

A serverless predictor pod with a custom `kserve.Model` image (the golden fixture
k8s/tests/fixtures/admission/predictor-enrich-custom-model.request.json, its ports made free ones)
is sent as an AdmissionReview to a real `quiver inject serve` over TLS (certificates made with
the openssl CLI). The JSON Patch it answers is applied, and the patched pod is run as the kubelet
would, with loopback standing in for the pod's network namespace:

- `kserve-container`: a real KServe model server (compat/kserve_feast_sample/echo_model.py as the
  image's entrypoint) with the arguments the injector gave it;
- `quiver-sidecar`: `quiver` with the arguments the injector gave it, the ConfigMap mounts
  replaced by folders (the feature repo; the enrich config under the key the volume names);
- the probes: the sidecar's readiness probe and queue-proxy's `SERVING_READINESS_PROBE`, as the
  patch left them, must answer;
- traffic, sent where queue-proxy sends it (`USER_PORT`): a KServe V1 predict with entity ids
  reaches the model as the stored features (written in Feast's Redis layout by this test), in the
  enrich config's order.

Needs the kserve venv (compat/setup-kserve-venv.sh), openssl, and a `quiver` whose `serve` has
`--enrich` (issue 18's enrichment).
"""

import base64
import copy
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fixture_helpers import free_port, log_of, post_json, redis_server, spawn  # noqa: E402
from test_kserve_feast_sample import (  # noqa: E402
    KSERVE_PYTHON,
    PROJECT,
    QUIVER,
    ROOT,
    SAMPLE,
    STORED,
    write_features,
)

FIXTURE = ROOT / "k8s" / "tests" / "fixtures" / "admission" / "predictor-enrich-custom-model.request.json"
# The quiver that runs the sidecar (default: QUIVER_BIN, which also runs the webhook).
SERVE = Path(os.environ.get("QUIVER_SERVE_BIN", QUIVER)).resolve()
MODEL = "driver-ranker"
ENRICH = """models:
  driver-ranker:
    feature_service: driver_scoring
    entities: [driver_id]
    order: [acc_rate, avg_daily_trips, conv_rate, driver_id]
"""
SERVICE = """  - name: driver_scoring
    features:
      - driver_hourly_stats: [acc_rate, avg_daily_trips, conv_rate]
"""


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> None:
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=test-ca")
    openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr",
            "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl(d, "x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "tls.crt", "-days", "2", "-extfile", "ext.cnf")


def json_patch(doc, ops):
    """RFC 6902 `add` and `replace`, the two operations the injector writes."""
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] in ("add", "replace"), op
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if isinstance(parent, list):
            if last == "-":
                parent.append(op["value"])
            elif op["op"] == "add":
                parent.insert(int(last), op["value"])
            else:
                parent[int(last)] = op["value"]
        else:
            if op["op"] == "replace":
                assert last in parent, op["path"]
            parent[last] = op["value"]
    return doc


def env_of(container, name):
    return next(e["value"] for e in container.get("env", []) if e["name"] == name)


def container(pod, name):
    spec = pod["spec"]
    return next(c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name)


def wait_for(check, proc, what, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited:\n{log_of(proc)}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready" + (f":\n{log_of(proc)}" if proc else ""))


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def tcp_ok(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def probe_ok(probe) -> bool:
    """A probe as the kubelet (or queue-proxy) runs it, against loopback."""
    if "httpGet" in probe:
        get = probe["httpGet"]
        return http_ok(f"http://127.0.0.1:{get['port']}{get.get('path', '/')}")
    return tcp_ok(int(probe["tcpSocket"]["port"]))


def test_the_rewired_pod_serves_enriched_predictions(tmp_path):
    serving, upstream, grpc = free_port(), free_port(), free_port()
    review = json.loads(FIXTURE.read_text())
    pod = review["request"]["object"]
    pod["metadata"]["annotations"]["quiver.dev/enrich-upstream-port"] = str(upstream)
    # The pod with its serving port where this machine has a free one (8080 in the fixture),
    # and its gRPC port too (the sidecar takes it; KServe's default 8081 may be taken here).
    model = container(pod, "kserve-container")
    model["ports"][0]["containerPort"] = serving
    model["args"] = (model.get("args") or []) + [f"--grpc_port={grpc}"]
    for c in (model, container(pod, "queue-proxy")):
        for e in c["env"]:
            if e["name"] in ("PORT", "USER_PORT"):
                e["value"] = str(serving)
            if e["name"] == "SERVING_READINESS_PROBE":
                probe = json.loads(e["value"])
                probe["tcpSocket"]["port"] = serving
                e["value"] = json.dumps(probe)

    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    procs = []
    try:
        webhook_port = free_port()
        webhook = spawn([QUIVER, "inject", "serve", "--tls-cert", certs / "tls.crt", "--tls-key",
                         certs / "tls.key", "--host", "127.0.0.1", "--port", webhook_port])
        procs.append(webhook)
        tls = ssl.create_default_context(cafile=str(certs / "ca.crt"))

        def webhook_ok():
            with urllib.request.urlopen(f"https://127.0.0.1:{webhook_port}/health", context=tls,
                                        timeout=2) as r:
                return r.status == 200

        wait_for(webhook_ok, webhook, "quiver inject serve")
        request = urllib.request.Request(
            f"https://127.0.0.1:{webhook_port}/mutate",
            data=json.dumps(review).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, context=tls, timeout=10) as r:
            answer = json.load(r)["response"]
        assert answer["allowed"], answer
        assert answer["patchType"] == "JSONPatch"
        patched = json_patch(pod, json.loads(base64.b64decode(answer["patch"])))

        model = container(patched, "kserve-container")
        sidecar = container(patched, "quiver-sidecar")
        proxy = container(patched, "queue-proxy")
        assert model["ports"][0]["containerPort"] == upstream
        assert f"--grpc_port={upstream + 1}" in model["args"], model["args"]
        assert sidecar["args"][sidecar["args"].index("--grpc-port") + 1] == str(grpc)
        assert f"http://127.0.0.1:{upstream + 1}" in sidecar["args"], sidecar["args"]
        assert env_of(proxy, "USER_PORT") == str(serving), "queue-proxy now reaches the sidecar"

        # The ConfigMaps the volumes name, as folders.
        volumes = {v["name"]: v for v in patched["spec"]["volumes"]}
        repo = tmp_path / "repo"
        shutil.copytree(ROOT / "examples" / "quickstart", repo)
        (repo / "features.yaml").write_text((repo / "features.yaml").read_text() + SERVICE)
        enrich_dir = tmp_path / "enrich"
        enrich_dir.mkdir()
        item = volumes["quiver-enrich"]["configMap"]["items"][0]
        (enrich_dir / item["path"]).write_text(ENRICH)
        mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
        where = {"quiver-repo": repo, "quiver-enrich": enrich_dir, "quiver-state": tmp_path}

        with redis_server(tmp_path) as redis_port:
            (repo / "feature_store.yaml").write_text(
                f"project: {PROJECT}\nregistry: data/registry.db\nprovider: local\n"
                f"online_store:\n  type: redis\n  connection_string: \"127.0.0.1:{redis_port}\"\n"
                "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
            )
            subprocess.run([str(SERVE), "apply", "--repo", str(repo)], check=True,
                           capture_output=True)
            write_features(redis_port)

            # The image's entrypoint (a custom kserve.Model), then the container's args. The
            # model's gRPC off: it would move to the upstream port + 1, which may be taken here
            # (test_kserve_enrich_grpc.py covers gRPC through the sidecar).
            entrypoint = [KSERVE_PYTHON, SAMPLE / "echo_model.py", "--model_name", MODEL,
                          "--enable_grpc", "false"]
            model_proc = spawn(entrypoint + model["args"])
            procs.append(model_proc)

            # Feast's API goes to the sidecar's usual port on loopback: here a free one.
            assert sidecar["args"][sidecar["args"].index("--api-port") + 1] == "6566", sidecar["args"]
            api = free_port()
            args = []
            for i, a in enumerate(sidecar["args"]):
                for mount, volume in mounts.items():
                    if a.startswith(mount):
                        a = str(where[volume]) + a[len(mount):]
                if i > 0 and sidecar["args"][i - 1] == "--api-port":
                    a = str(api)
                args.append("127.0.0.1" if a == "0.0.0.0" else a)
            sidecar_proc = spawn([SERVE, *args])
            procs.append(sidecar_proc)

            # The probes as the patch left them: the sidecar's, and queue-proxy's check of the
            # model (Knative moved the model's readiness probe there).
            wait_for(lambda: probe_ok(sidecar["readinessProbe"]), sidecar_proc, "the sidecar")
            serving_probe = json.loads(env_of(proxy, "SERVING_READINESS_PROBE"))
            assert serving_probe["tcpSocket"]["port"] == upstream
            wait_for(lambda: probe_ok(serving_probe), model_proc, "the model")

            ids = sorted(STORED)
            status, text = post_json(
                f"http://127.0.0.1:{env_of(proxy, 'USER_PORT')}/v1/models/{MODEL}:predict",
                {"instances": [{"driver_id": i} for i in ids]},
            )
            assert status == 200, f"{status} {text}\n{log_of(sidecar_proc)}"
            expected = [
                [STORED[i]["acc_rate"], STORED[i]["avg_daily_trips"], STORED[i]["conv_rate"], i]
                for i in ids
            ]
            assert json.loads(text)["predictions"] == expected
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
