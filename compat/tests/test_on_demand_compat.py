"""On-demand feature views, quiver against the real Feast 0.67, on `feast init`'s template.

The template repo, untouched: `feast init`, `feast apply`, `feast materialize-incremental`. Then
`feast serve_transformations` (Feast's transformation service, the Python that runs the
on-demand views), `feast serve`, and `quiver serve --transformation-service` on the same repo:

- every template feature service (each holds an on-demand view), with the request data
  val_to_add / val_to_add_2, full_feature_names on and off: quiver's answer has Feast's column
  names, values (JSON types included), statuses and event times. Column order is compared as a
  set: Feast 0.67 orders a service's features through a Python set, so its order changes with
  PYTHONHASHSEED (quiver keeps the service's order). Map values are compared as dicts (key order
  is the Map/Struct work's, not this one's).
- a request that asks only for an on-demand feature, and the request-data errors (missing,
  wrong type), which name the field.
- without --transformation-service: a 400 naming the view and the flag, and a warning at start
  listing the feature services that will be refused.
- a historical retrieval with the on-demand view (`quiver historical`) equals Feast's
  get_historical_features.
- the Feast SDK with `offline_store: {type: remote}` pointed at `quiver offline serve
  --transformation-service` gets the same `get_historical_features(...).to_df()` as Feast's
  own file store for the template's training query (test_workflow.py's features and entity
  columns); without the flag, a Feast error naming the view and offline serve's flag.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
FEAST_CLI = Path(sys.executable).parent / "feast"
sys.path.insert(0, str(ROOT / "compat"))

from fixture_helpers import feast_serve, free_port, log_of, spawn, stop_process_group  # noqa: E402

SERVICES = ["driver_activity_v1", "driver_activity_v2", "driver_activity_v3"]
ENTITIES = {
    "driver_id": [1001, 1002, 1005, 9999],
    "val_to_add": [1000, 2000, 3000, 4000],
    "val_to_add_2": [10, 20, 30, 40],
}


def post(base: str, body: dict):
    req = urllib.request.Request(
        base + "/get-online-features",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        # Errors come as Feast's feature server sends them: a JSON string holding
        # {"class", "message"}.
        body = json.loads(e.read())
        return e.code, json.loads(body) if isinstance(body, str) else body


def wait_ready(base: str, proc, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited:\n{log_of(proc)}"
        try:
            with urllib.request.urlopen(base + "/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{what} did not become ready:\n{log_of(proc)}")


def wait_port(port: int, proc, what: str) -> None:
    import socket

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{what} exited:\n{log_of(proc)}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{what} did not listen on {port}:\n{log_of(proc)}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """`feast init`'s template, applied and materialized by Feast."""
    root = tmp_path_factory.mktemp("odfv")
    env = dict(os.environ, TZ="UTC")
    subprocess.run([str(FEAST_CLI), "init", "demo_repo"], cwd=root, check=True, capture_output=True, env=env)
    repo = root / "demo_repo" / "feature_repo"
    subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, check=True, capture_output=True, env=env)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    subprocess.run(
        [str(FEAST_CLI), "materialize-incremental", now], cwd=repo, check=True, capture_output=True, env=env
    )
    return repo


@pytest.fixture(scope="module")
def transformation_service(repo: Path):
    port = free_port()
    proc = subprocess.Popen(
        [str(FEAST_CLI), "serve_transformations", "--port", str(port)],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=open(repo / "transformations.log", "wb"),
        start_new_session=True,
    )
    proc.log_path = str(repo / "transformations.log")
    try:
        wait_port(port, proc, "feast serve_transformations")
        yield f"127.0.0.1:{port}"
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="module")
def feast(repo: Path):
    with feast_serve(repo, repo / "feast_serve.log") as base:
        yield base


def quiver_serve(repo: Path, *args: str):
    port = free_port()
    proc = spawn([QUIVER, "serve", "--repo", repo, "--port", str(port), *args])
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, proc, "quiver serve")
    return proc, base


@pytest.fixture(scope="module")
def quiver(repo: Path, transformation_service: str):
    proc, base = quiver_serve(repo, "--transformation-service", transformation_service)
    try:
        yield base
    finally:
        proc.kill()
        proc.wait()


def typed(v):
    """A JSON value with its types spelled out (1 and 1.0 differ), Map key order ignored."""
    if isinstance(v, dict):
        return {"dict": {k: typed(x) for k, x in v.items()}}
    if isinstance(v, list):
        return [typed(x) for x in v]
    return (type(v).__name__, v)


def columns(answer: dict) -> dict:
    names = answer["metadata"]["feature_names"]
    return {
        n: {k: typed(col[k]) for k in ("values", "statuses", "event_timestamps")}
        for n, col in zip(names, answer["results"])
    }


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("full", [False, True])
def test_feature_services_answer_as_feast_serve(feast: str, quiver: str, service: str, full: bool) -> None:
    body = {"feature_service": service, "entities": ENTITIES, "full_feature_names": full}
    fs, theirs = post(feast, body)
    qs, ours = post(quiver, body)
    assert (fs, qs) == (200, 200), (theirs, ours)
    assert sorted(ours["metadata"]["feature_names"]) == sorted(theirs["metadata"]["feature_names"])
    # Request data is not echoed.
    assert "val_to_add" not in ours["metadata"]["feature_names"]
    assert columns(ours) == columns(theirs)
    # The on-demand outputs are real numbers, not nulls that compare equal.
    plus = [c for n, c in columns(ours).items() if n.endswith("conv_rate_plus_val1")][0]
    assert plus["values"][0][0] == "float" and plus["values"][0][1] > 1000


def test_only_an_on_demand_feature(feast: str, quiver: str) -> None:
    body = {
        "features": ["transformed_conv_rate:conv_rate_plus_val2"],
        "entities": {"driver_id": [1001, 1003], "val_to_add": [1, 2], "val_to_add_2": [5, 6]},
    }
    fs, theirs = post(feast, body)
    qs, ours = post(quiver, body)
    assert (fs, qs) == (200, 200)
    assert ours["metadata"]["feature_names"] == ["driver_id", "conv_rate_plus_val2"]
    assert columns(ours) == columns(theirs)


def test_request_data_mistakes_name_the_field(quiver: str) -> None:
    status, body = post(
        quiver, {"feature_service": "driver_activity_v1", "entities": {"driver_id": [1001], "val_to_add": [1]}}
    )
    assert status == 400
    assert body["class"] == "RequestDataNotFoundInEntityRowsException"
    assert "val_to_add_2" in body["message"]
    status, body = post(
        quiver,
        {
            "feature_service": "driver_activity_v1",
            "entities": {"driver_id": [1001], "val_to_add": ["x"], "val_to_add_2": [1]},
        },
    )
    assert status == 400
    assert "entities.val_to_add[0]" in body["message"] and "Int64" in body["message"]


def test_without_a_transformation_service_the_view_and_the_flag_are_named(repo: Path) -> None:
    proc, base = quiver_serve(repo)
    try:
        status, body = post(base, {"feature_service": "driver_activity_v2", "entities": ENTITIES})
        assert status == 400
        assert "transformed_conv_rate" in body["message"]
        assert "--transformation-service" in body["message"]
        assert "unknown" not in body["message"].lower()
        # Views without on-demand features are served as before.
        status, _ = post(base, {"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}})
        assert status == 200
        log = Path(proc.log_path).read_text()
        assert "driver_activity_v1, driver_activity_v2, driver_activity_v3" in log, log
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("full", [False, True])
def test_historical_retrieval_with_the_on_demand_view_equals_feasts(
    repo: Path, transformation_service: str, full: bool
) -> None:
    import pandas as pd
    import pyarrow.parquet as pq
    from datetime import timedelta

    from feast import FeatureStore

    stats = pd.read_parquet(repo / "data" / "driver_stats.parquet")
    latest = stats["event_timestamp"].max()
    drivers = sorted(stats["driver_id"].unique())[:5] + [9999]
    rows = []
    for i, d in enumerate(drivers * 4):
        rows.append(
            {
                "driver_id": int(d),
                "event_timestamp": latest - timedelta(hours=3 * i),
                "val_to_add": i,
                "val_to_add_2": 100 * i,
            }
        )
    entity_df = pd.DataFrame(rows)
    entities = repo / "entities.parquet"
    entity_df.to_parquet(entities)
    store = FeatureStore(str(repo))
    service = store.get_feature_service("driver_activity_v1")
    theirs = store.get_historical_features(
        entity_df=entity_df, features=service, full_feature_names=full
    ).to_df()

    out = repo / f"historical_{full}.parquet"
    args = [
        QUIVER, "historical", "--repo", repo, "--entities", entities,
        "--feature-service", "driver_activity_v1", "--out", out,
        "--transformation-service", transformation_service,
    ]
    if full:
        args.append("--full-feature-names")
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ours = pq.read_table(out).to_pandas()

    prefix = ("driver_hourly_stats__", "transformed_conv_rate__") if full else ("", "")
    wanted = [prefix[0] + "conv_rate", prefix[1] + "conv_rate_plus_val1", prefix[1] + "conv_rate_plus_val2"]
    # Entity columns, then what the service asks for, in its order (Feast adds the on-demand
    # view's other source features too, and orders columns through a Python set).
    assert list(ours.columns) == ["driver_id", "event_timestamp", "val_to_add", "val_to_add_2", *wanted]
    key = ["driver_id", "event_timestamp"]
    theirs = theirs.sort_values(key).reset_index(drop=True)
    ours = ours.sort_values(key).reset_index(drop=True)
    assert len(ours) == len(entity_df)
    for c in wanted:
        assert str(ours[c].dtype) == str(theirs[c].dtype), c
        pd.testing.assert_series_equal(ours[c], theirs[c], check_names=False)
    assert ours[wanted[1]].notna().sum() > 5  # real values, not nulls that compare equal


def test_historical_without_a_transformation_service_names_the_flag(repo: Path) -> None:
    done = subprocess.run(
        [
            str(QUIVER), "historical", "--repo", str(repo), "--entities", str(repo / "entities.parquet"),
            "--features", "transformed_conv_rate:conv_rate_plus_val1", "--out", str(repo / "x.parquet"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "transformed_conv_rate" in done.stderr and "--transformation-service" in done.stderr


TRAINING_FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "transformed_conv_rate:conv_rate_plus_val1",
    "transformed_conv_rate:conv_rate_plus_val2",
]


def training_entity_df():
    """The template's test_workflow.py training query: a label and the request data columns."""
    import pandas as pd

    now = datetime.now(timezone.utc).replace(microsecond=0)
    from datetime import timedelta

    return pd.DataFrame(
        {
            "driver_id": [1001, 1002, 1003, 1004, 1001, 9999],
            "event_timestamp": [now - timedelta(hours=h) for h in (1, 2, 3, 30, 60, 1)],
            "label_driver_reported_satisfaction": [1, 5, 3, 4, 2, 1],
            "val_to_add": [1, 2, 3, 4, 5, 6],
            "val_to_add_2": [10, 20, 30, 40, 50, 60],
        }
    )


def start_offline_server(repo: Path, *extra: str):
    """`quiver offline serve`: Arrow Flight on the returned port, POST /v1/historical at
    `proc.http`."""
    port, http_port = free_port(), free_port()
    proc = spawn([QUIVER, "offline", "serve", "--repo", repo, "--port", str(port),
                  "--http-port", str(http_port), *extra])
    wait_port(port, proc, "quiver offline serve")
    wait_port(http_port, proc, "quiver offline serve (HTTP)")
    proc.http = f"http://127.0.0.1:{http_port}"
    return proc, port


def post_historical(base: str, entity_df, full: bool):
    """POST /v1/historical with the entity rows inline: (status, DataFrame or error JSON)."""
    import pyarrow as pa

    body = {
        "features": TRAINING_FEATURES,
        "full_feature_names": full,
        "entities": {
            c: ([t.isoformat() for t in entity_df[c]] if c == "event_timestamp" else entity_df[c].tolist())
            for c in entity_df.columns
        },
    }
    req = urllib.request.Request(
        base + "/v1/historical", data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, pa.ipc.open_stream(r.read()).read_all().to_pandas()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def remote_client(tmp_path: Path, repo: Path, port: int) -> Path:
    """A Feast client of the same registry whose offline store is quiver's Flight server."""
    client = tmp_path / f"client_{port}"
    client.mkdir()
    (client / "feature_store.yaml").write_text(
        f"project: demo_repo\nregistry: {repo / 'data' / 'registry.db'}\nprovider: local\n"
        f"online_store:\n  type: sqlite\n  path: {client / 'online.db'}\n"
        f"offline_store:\n  type: remote\n  host: 127.0.0.1\n  port: {port}\n"
        "entity_key_serialization_version: 3\n"
    )
    return client


@pytest.mark.parametrize("full", [False, True])
def test_feast_remote_offline_store_gets_on_demand_views_from_quiver_offline_serve(
    repo: Path, transformation_service: str, tmp_path: Path, full: bool
) -> None:
    import pandas as pd

    from feast import FeatureStore

    entity_df = training_entity_df()
    theirs = FeatureStore(str(repo)).get_historical_features(
        entity_df=entity_df, features=TRAINING_FEATURES, full_feature_names=full
    ).to_df()
    proc, port = start_offline_server(repo, "--transformation-service", transformation_service)
    try:
        store = FeatureStore(repo_path=str(remote_client(tmp_path, repo, port)))
        ours = store.get_historical_features(
            entity_df=entity_df, features=TRAINING_FEATURES, full_feature_names=full
        ).to_df()
        # A request field missing from the entity table is named, before any data is read.
        from feast.errors import FeastError

        with pytest.raises(FeastError) as e:
            store.get_historical_features(
                entity_df=entity_df.drop(columns=["val_to_add_2"]), features=TRAINING_FEATURES
            ).to_df()
        assert "val_to_add_2" in str(e.value) and "transformed_conv_rate" in str(e.value)
        # POST /v1/historical computes them too.
        status, http = post_historical(proc.http, entity_df, full)
        assert status == 200, http
    finally:
        proc.kill()
        proc.wait()
    # The same columns (Feast's order goes through a Python set: compared as a set).
    assert sorted(ours.columns) == sorted(theirs.columns), (list(ours.columns), list(theirs.columns))
    # ... but the on-demand outputs come last, as Feast's offline server appends them.
    outputs = [c for c in theirs.columns if c.endswith(("conv_rate_plus_val1", "conv_rate_plus_val2"))]
    assert list(theirs.columns)[-2:] == outputs, list(theirs.columns)
    assert list(ours.columns)[-2:] == outputs, list(ours.columns)
    key = ["driver_id", "event_timestamp"]
    theirs = theirs.sort_values(key).reset_index(drop=True)
    ours = ours.sort_values(key).reset_index(drop=True)[list(theirs.columns)]
    assert len(ours) == len(entity_df)
    pd.testing.assert_frame_equal(ours, theirs)
    # Feast's client also asks for the on-demand view's other source features (the Map and
    # Struct ones); POST /v1/historical returns what was asked for, in request order.
    names = [(f.replace(":", "__") if full else f.split(":")[1]) for f in TRAINING_FEATURES]
    assert list(http.columns) == list(entity_df.columns) + names
    http = http.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(http, theirs[list(http.columns)])
    plus = ("transformed_conv_rate__" if full else "") + "conv_rate_plus_val1"
    assert ours[plus].notna().sum() >= 4  # real values, not nulls that compare equal


def test_offline_serve_without_a_transformation_service_names_the_view_and_the_flag(
    repo: Path, tmp_path: Path
) -> None:
    from feast import FeatureStore
    from feast.errors import FeastError

    proc, port = start_offline_server(repo)
    try:
        store = FeatureStore(repo_path=str(remote_client(tmp_path, repo, port)))
        with pytest.raises(FeastError) as e:
            store.get_historical_features(
                entity_df=training_entity_df(), features=TRAINING_FEATURES
            ).to_df()
        status, body = post_historical(proc.http, training_entity_df(), False)
    finally:
        proc.kill()
        proc.wait()
    assert "transformed_conv_rate" in str(e.value)
    assert "quiver offline serve with --transformation-service" in str(e.value)
    assert status == 422, body
    assert "transformed_conv_rate" in body["message"] and "--transformation-service" in body["message"]


def test_arrow_answers_carry_the_on_demand_features(feast: str, quiver: str) -> None:
    """Accept: Arrow with on-demand features (was 501): the same values, statuses and names as
    the JSON answer (which equals feast serve's); each call is counted in /metrics."""
    import pyarrow as pa

    def metric(name: str) -> float:
        with urllib.request.urlopen(quiver + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        raise AssertionError(f"no metric {name}")

    calls = 'quiver_transformation_calls_total{phase="serve",outcome="ok"}'
    before = metric(calls)
    body = {"feature_service": "driver_activity_v1", "entities": ENTITIES, "full_feature_names": True}
    status, as_json = post(quiver, body)
    assert status == 200
    req = urllib.request.Request(
        quiver + "/get-online-features",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "accept": "application/vnd.apache.arrow.stream"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
        table = pa.ipc.open_stream(r.read()).read_all()
    assert metric(calls) == before + 2
    assert table.column("driver_id").to_pylist() == ENTITIES["driver_id"]
    assert "val_to_add" not in table.column_names
    for name, col in zip(as_json["metadata"]["feature_names"], as_json["results"]):
        if name == "driver_id":
            continue
        values = table.column(name).to_pylist()
        for a, j in zip(values, col["values"]):
            assert a == pytest.approx(j) if isinstance(j, float) else a == j, (name, values, col["values"])
        assert table.column(f"{name}__status").to_pylist() == col["statuses"]
    plus = table.column("transformed_conv_rate__conv_rate_plus_val1")
    assert plus.type == pa.float64() and plus.to_pylist()[0] > 1000


def test_historical_mixes_native_and_service_on_demand_views(
    repo: Path, transformation_service: str, tmp_path: Path
) -> None:
    """One `quiver historical` request with a pandas on-demand view (Feast's transformation
    service) and a native one (quiver's expressions) beside a plain feature (was a 400). The
    native view is added to a copy of Feast's registry as `quiver apply` stores one."""
    import shutil

    import pandas as pd
    import pyarrow.parquet as pq
    from feast import FeatureStore
    from feast.protos.feast.core.FeatureViewProjection_pb2 import FeatureViewProjection
    from feast.protos.feast.core.Feature_pb2 import FeatureSpecV2
    from feast.protos.feast.core.OnDemandFeatureView_pb2 import OnDemandFeatureView
    from feast.protos.feast.core.Registry_pb2 import Registry
    from feast.protos.feast.core.Transformation_pb2 import UserDefinedFunctionV2
    from feast.protos.feast.types.Value_pb2 import ValueType

    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    registry = Registry()
    registry.ParseFromString((copy / "data" / "registry.db").read_bytes())
    project = registry.feature_views[0].spec.project
    native = OnDemandFeatureView()
    native.spec.name = "conv_native"
    native.spec.project = project
    native.spec.mode = "python"
    native.spec.features.append(FeatureSpecV2(name="conv_plus_one", value_type=ValueType.DOUBLE))
    native.spec.sources["driver_hourly_stats"].feature_view_projection.CopyFrom(
        FeatureViewProjection(
            feature_view_name="driver_hourly_stats",
            feature_columns=[FeatureSpecV2(name="conv_rate", value_type=ValueType.FLOAT)],
        )
    )
    native.spec.feature_transformation.user_defined_function.CopyFrom(
        UserDefinedFunctionV2(
            name="quiver_native",
            mode="quiver",
            body_text='# quiver-expressions: [["conv_plus_one", "driver_hourly_stats.conv_rate + 1"]]\n'
            "def quiver_native(inputs):\n    raise NotImplementedError()\n",
        )
    )
    registry.on_demand_feature_views.append(native)
    (copy / "data" / "registry.db").write_bytes(registry.SerializeToString())

    entities = repo / "entities.parquet"
    if not entities.exists():
        pytest.skip("needs the entity table of test_historical_retrieval_with_the_on_demand_view_equals_feasts")
    entity_df = pd.read_parquet(entities)
    features = [
        "driver_hourly_stats:conv_rate",
        "transformed_conv_rate:conv_rate_plus_val1",
        "conv_native:conv_plus_one",
    ]
    theirs = (
        FeatureStore(str(repo))
        .get_historical_features(entity_df=entity_df, features=features[:2])
        .to_df()
    )
    out = tmp_path / "mixed.parquet"
    args = [QUIVER, "historical", "--repo", copy, "--entities", entities, "--out", out,
            "--transformation-service", transformation_service, "--features", ",".join(features)]
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ours = pq.read_table(out).to_pandas()
    assert list(ours.columns)[-3:] == ["conv_rate", "conv_rate_plus_val1", "conv_plus_one"]
    key = ["driver_id", "event_timestamp"]
    theirs = theirs.sort_values(key).reset_index(drop=True)
    ours = ours.sort_values(key).reset_index(drop=True)
    pd.testing.assert_series_equal(ours["conv_rate_plus_val1"], theirs["conv_rate_plus_val1"], check_names=False)
    expected = ours["conv_rate"].astype("float64") + 1
    pd.testing.assert_series_equal(ours["conv_plus_one"], expected, check_names=False)
    assert ours["conv_plus_one"].notna().sum() > 5


def test_remote_offline_store_with_an_aliased_view_beside_an_on_demand_view(
    transformation_service: str, repo: Path, tmp_path: Path
) -> None:
    """A feature service that aliases a feature view (`with_name`) next to an on-demand view,
    through Feast's remote offline store client and `quiver offline serve` (was 501): Feast's
    own file store's answer."""
    import shutil

    import pandas as pd
    from feast import FeatureStore

    copy = tmp_path / "aliased_repo"
    shutil.copytree(repo, copy)
    with open(copy / "feature_definitions.py", "a") as f:
        f.write(
            "\n\naliased_activity = FeatureService(\n"
            "    name=\"aliased_activity\",\n"
            "    features=[driver_stats_fv.with_name(\"drv\")[[\"conv_rate\", \"acc_rate\"]], transformed_conv_rate],\n"
            ")\n"
        )
    done = subprocess.run([str(FEAST_CLI), "apply"], cwd=copy, capture_output=True, text=True,
                          env=dict(os.environ, TZ="UTC"))
    assert done.returncode == 0, done.stderr
    entity_df = training_entity_df()
    local = FeatureStore(str(copy))
    theirs = local.get_historical_features(
        entity_df=entity_df, features=local.get_feature_service("aliased_activity"), full_feature_names=True
    ).to_df()
    proc, port = start_offline_server(copy, "--transformation-service", transformation_service)
    try:
        store = FeatureStore(repo_path=str(remote_client(tmp_path, copy, port)))
        ours = store.get_historical_features(
            entity_df=entity_df, features=store.get_feature_service("aliased_activity"), full_feature_names=True
        ).to_df()
    finally:
        proc.kill()
        proc.wait()
    assert "drv__conv_rate" in ours.columns and "transformed_conv_rate__conv_rate_plus_val1" in ours.columns
    wanted = ["drv__conv_rate", "drv__acc_rate", "transformed_conv_rate__conv_rate_plus_val1",
              "transformed_conv_rate__conv_rate_plus_val2"]
    key = ["driver_id", "event_timestamp"]
    theirs = theirs.sort_values(key).reset_index(drop=True)
    ours = ours.sort_values(key).reset_index(drop=True)
    for c in wanted:
        pd.testing.assert_series_equal(ours[c], theirs[c], check_names=False)
    assert ours[wanted[2]].notna().sum() > 2
