"""Feast's own client of a feature server, unmodified, against quiver and against `feast serve`.

Two identical Feast-applied repos, each with a redis-server of its own: one served by
`quiver serve --role ingest`, the other by `feast serve` (the baseline, in the same test). Two
client repos whose feature_store.yaml says `online_store: {type: remote, path: ...}` point the
real Feast 0.67 SDK at each. Every call is made through both clients and compared:
- get_online_features (feature lists, a feature service, full_feature_names, a request column
  that is not a join key): the same `to_dict()`;
- materialize and materialize_incremental (through `POST /materialize*`): the same Redis
  contents byte for byte, the intervals recorded in each server's registry;
- push and write_to_online_store (through `POST /write-to-online-store`, scalar types): the
  same Redis contents byte for byte, read back the same;
- error cases (unknown view, feature, feature service, bad entities, a name collision, writes
  to an unknown view, a bad materialization): where `feast serve` answers a 4xx the SDK raises
  the same exception class against both. Where `feast serve` answers a caller's mistake with a
  500 (an unknown feature, bad entities, a name collision), its SDK retries and raises requests'
  RetryError; quiver answers a 4xx naming the field, raised as Feast's class where Feast has
  one (FeatureNameCollisionError), else as RuntimeError carrying the status and message.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_materialize_compat import (  # noqa: E402
    FEAST_CLI,
    QUIVER,
    ROOT,
    at,
    free_port,
    redis_dump,
    write_sources,
)

START = datetime(2026, 1, 1, 9, tzinfo=timezone.utc)
END = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k != "FEATURE_STORE_YAML_BASE64"}


class Redis:
    def __init__(self, cwd: Path) -> None:
        import redis

        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def server_repo(root: Path, redis_port: int) -> Path:
    repo = root / "server"
    shutil.copytree(ROOT / "compat/feast_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    write_sources(repo / "data")
    config = (repo / "feature_store.yaml").read_text()
    start, end = config.index("online_store:"), config.index("offline_store:")
    online = f"online_store:\n  type: redis\n  connection_string: 127.0.0.1:{redis_port}\n"
    (repo / "feature_store.yaml").write_text(config[:start] + online + config[end:])
    done = subprocess.run([str(FEAST_CLI), "apply"], cwd=repo, env=clean_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return repo


def client_repo(root: Path, server: Path, port: int, token: str | None = None, name: str = "client") -> Path:
    """A repo with only a feature_store.yaml: the server's registry, a remote online store, and
    with `token`, Feast's `kubernetes` auth sending it as `Authorization: Bearer`."""
    repo = root / name
    repo.mkdir()
    auth = f"auth:\n  type: kubernetes\n  user_token: {token}\n" if token else ""
    (repo / "feature_store.yaml").write_text(
        "project: quickstart\n"
        f"registry: {server / 'data/registry.db'}\n"
        "provider: local\n"
        f"online_store:\n  type: remote\n  path: http://127.0.0.1:{port}\n"
        "offline_store:\n  type: file\n"
        f"{auth}"
        "entity_key_serialization_version: 3\n"
    )
    return repo


def wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(f"{url} exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not become ready:\n{log.read_text()}")


class Side:
    """One server (quiver or feast serve) with its Redis, and the SDK pointed at it."""

    def __init__(self, root: Path, kind: str, token: str | None = None) -> None:
        root.mkdir()
        self.kind = kind
        self.redis = Redis(root)
        self.server = server_repo(root, self.redis.port)
        self.port = free_port()
        self.log = root / "server.log"
        if kind == "quiver":
            cmd = [str(QUIVER), "serve", "--repo", str(self.server), "--port", str(self.port), "--role", "ingest"]
            if token:
                cmd += ["--host", "0.0.0.0"]
            ready = f"http://127.0.0.1:{self.port}/ready"
        else:
            cmd = [str(FEAST_CLI), "serve", "--port", str(self.port)]
            ready = f"http://127.0.0.1:{self.port}/health"
        env = clean_env()
        if token:
            env["QUIVER_PUSH_TOKEN"] = token
        with open(self.log, "w") as log:
            # Its own process group: `feast serve` forks workers, which must end with it.
            self.proc = subprocess.Popen(
                cmd, cwd=self.server, env=env, stdout=log, stderr=log, start_new_session=True
            )
        wait_ready(ready, self.proc, self.log)
        self.client = client_repo(root, self.server, self.port)

    def store(self):
        from feast import FeatureStore

        return FeatureStore(repo_path=str(self.client))

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.redis.stop()


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    made = []
    try:
        made.append(Side(root / "quiver", "quiver"))
        made.append(Side(root / "feast", "feast"))
        yield made[0], made[1]
    finally:
        for s in made:
            s.stop()


def both(sides, call):
    """`call(store)` through both clients: (quiver's result, feast serve's result)."""
    q, f = sides
    return call(q.store()), call(f.store())


def raised(call, store):
    with pytest.raises(Exception) as info:
        call(store)
    return info.value


def same_error(sides, call):
    """The exception quiver's client raises, checked to be of the class feast serve's raises."""
    q, f = sides
    by_quiver = raised(call, q.store())
    by_feast = raised(call, f.store())
    assert type(by_quiver) is type(by_feast), f"quiver: {by_quiver!r}\nfeast serve: {by_feast!r}"
    return by_quiver


def feast_serve_500(sides, call):
    """A caller's mistake that `feast serve` answers with a 500 (its handler's generic branch):
    Feast's SDK retries the POST (urllib3's status_forcelist) and raises requests' RetryError.
    quiver answers a 4xx naming the field, which the SDK raises as Feast's class when there is
    one, else as RuntimeError with the status and quiver's message. Returns quiver's."""
    import requests

    q, f = sides
    by_feast = raised(call, f.store())
    assert isinstance(by_feast, requests.exceptions.RetryError), repr(by_feast)
    return raised(call, q.store())


def test_1_materialize_through_the_remote_store(sides) -> None:
    q, f = sides
    both(sides, lambda s: s.materialize(START, END, feature_views=["driver_hourly_stats", "customer_profile"]))
    by_quiver, by_feast = redis_dump(q.redis.client), redis_dump(f.redis.client)
    assert len(by_quiver) >= 4
    assert by_quiver == by_feast
    # materialize_incremental starts where the last run ended: 1001's row of 13:00 comes in.
    both(sides, lambda s: s.materialize_incremental(at(13.5), feature_views=["driver_hourly_stats"]))
    assert redis_dump(q.redis.client) == redis_dump(f.redis.client)
    assert redis_dump(q.redis.client) != by_quiver
    # The intervals are in each server's registry, where Feast reads them.
    from feast import FeatureStore

    def ends(side):
        view = FeatureStore(repo_path=str(side.server)).get_feature_view("driver_hourly_stats")
        return sorted(i[1].astimezone(timezone.utc) for i in view.materialization_intervals)

    assert ends(q) == ends(f) == [END, at(13.5)]
    # `feast materialize-incremental` on the command line goes the same way.
    for side in sides:
        done = subprocess.run(
            [str(FEAST_CLI), "materialize-incremental", "2026-01-01T14:00:00", "--views", "driver_hourly_stats"],
            cwd=side.client, env=clean_env(), capture_output=True, text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    assert ends(q) == ends(f) == [END, at(13.5), at(14)]
    assert redis_dump(q.redis.client) == redis_dump(f.redis.client)


def test_2_materialize_errors(sides) -> None:
    e = same_error(sides, lambda s: s.materialize(START, END, feature_views=["nope"]))
    assert isinstance(e, RuntimeError)
    assert "(404)" in str(e) and "nope" in str(e), e
    # An END far in the future is refused by quiver (Feast issue 4222); Feast accepts it, so
    # only quiver's side is checked: a 400 naming the end.
    e = raised(lambda s: s.materialize_incremental(datetime(2100, 1, 1), feature_views=["driver_hourly_stats"]), sides[0].store())
    assert isinstance(e, RuntimeError)
    assert "(400)" in str(e) and "in the future" in str(e), e


FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_hourly_stats:recent_zones",
    "customer_profile:tier",
    "customer_profile:lifetime_value",
    "customer_profile:is_vip",
    "customer_profile:signup_ts",
    "driver_customer_affinity:rides_together",
]
ROWS = [
    {"driver_id": 1001, "customer_id": "c1"},
    {"driver_id": 1002, "customer_id": "c2"},
    {"driver_id": 1004, "customer_id": "c9"},
]


def test_3_get_online_features_answers_as_feast_serve(sides) -> None:
    for full in (False, True):
        q, f = both(sides, lambda s: s.get_online_features(features=FEATURES, entity_rows=ROWS, full_feature_names=full).to_dict())
        assert q == f
        assert (q["conv_rate"] if not full else q["driver_hourly_stats__conv_rate"])[0] == pytest.approx(0.9)  # 13:00, by the incremental run
    # Feature services (one with a projection alias), through the SDK's objects.
    for service, full in (("driver_ranking", False), ("driver_ranking", True), ("ride_scoring", True)):
        q, f = both(
            sides,
            lambda s: s.get_online_features(
                features=s.get_feature_service(service), entity_rows=ROWS, full_feature_names=full
            ).to_dict(),
        )
        assert q == f
    assert "fresh__conv_rate" in q
    # A request column that is no join key of the requested views does not come back.
    rows = [{"driver_id": 1001, "val_to_add": 10}, {"driver_id": 1003, "val_to_add": 20}]
    q, f = both(sides, lambda s: s.get_online_features(features=FEATURES[:2], entity_rows=rows).to_dict())
    assert q == f
    assert set(q) == {"driver_id", "conv_rate", "avg_daily_trips"}


def test_4_read_errors_raise_what_feast_serve_makes_the_sdk_raise(sides) -> None:
    from feast import FeatureService
    from feast.errors import FeatureNameCollisionError, FeatureServiceNotFoundException, FeatureViewNotFoundException

    def get(features, rows=None):
        return lambda s: s.get_online_features(features=features, entity_rows=rows or [{"driver_id": 1001}])

    e = same_error(sides, get(["nope:conv_rate"]))
    assert isinstance(e, FeatureViewNotFoundException) and "nope" in str(e)
    e = feast_serve_500(sides, get(["driver_hourly_stats:nope"]))
    assert isinstance(e, RuntimeError) and ": 404 " in str(e) and "nope" in str(e), e

    def unknown_service(s):
        service = FeatureService(name="nope", features=[s.get_feature_view("driver_hourly_stats")])
        return s.get_online_features(features=service, entity_rows=[{"driver_id": 1001}])

    e = same_error(sides, unknown_service)
    assert isinstance(e, FeatureServiceNotFoundException) and "nope" in str(e)
    # Bad entities: a missing join key, a value of the wrong type.
    e = feast_serve_500(sides, get(FEATURES[:1], [{"driver_idx": 1001}]))
    assert isinstance(e, RuntimeError) and ": 400 " in str(e) and "driver_id" in str(e), e
    e = feast_serve_500(sides, get(FEATURES[:1], [{"driver_id": "abc"}]))
    assert isinstance(e, RuntimeError) and ": 400 " in str(e) and "driver_id" in str(e), e
    e = feast_serve_500(sides, get(["driver_hourly_stats:conv_rate", "driver_hourly_stats_fresh:conv_rate"]))
    assert isinstance(e, FeatureNameCollisionError) and "conv_rate" in str(e)
    # ride_scoring has conv_rate twice (its own view's and the alias fresh's).
    e = feast_serve_500(sides, lambda s: s.get_online_features(features=s.get_feature_service("ride_scoring"), entity_rows=ROWS))
    assert isinstance(e, FeatureNameCollisionError) and "conv_rate" in str(e)


def test_5_push_and_write_to_online_store(sides) -> None:
    from feast.data_source import PushMode

    pushed = pd.DataFrame(
        {
            "driver_id": [1001, 1002, 1001],
            "event_timestamp": [at(20), at(21), at(22)],
            "created": [at(20), at(21), at(22)],
            "conv_rate": pd.Series([0.5, 0.25, 0.125], dtype="float32"),
            "acc_rate": pd.Series([0.75, 0.5, 0.375], dtype="float32"),
        }
    )
    both(sides, lambda s: s.push("driver_stats_push", pushed, to=PushMode.ONLINE))
    profiles = pd.DataFrame(
        {
            "customer_id": ["c7", "c8"],
            "event_timestamp": [at(20), at(20.5)],
            "tier": ["platinum", "tin"],
            "lifetime_value": [1234.5, -0.25],
            "is_vip": [True, False],
            "signup_ts": [at(3), at(4)],
        }
    )
    both(sides, lambda s: s.write_to_online_store("customer_profile", profiles))
    q, f = sides
    assert redis_dump(q.redis.client) == redis_dump(f.redis.client)
    rows = [{"driver_id": 1001, "customer_id": "c7"}, {"driver_id": 1002, "customer_id": "c8"}]
    features = ["driver_hourly_stats_fresh:conv_rate", "driver_hourly_stats_fresh:acc_rate", *FEATURES[3:7]]
    by_quiver, by_feast = both(sides, lambda s: s.get_online_features(features=features, entity_rows=rows).to_dict())
    assert by_quiver == by_feast
    assert by_quiver["tier"] == ["platinum", "tin"]
    assert by_quiver["conv_rate"] == [0.125, 0.25]


def test_6_write_errors(sides) -> None:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.errors import FeastObjectNotFoundException, PushSourceNotFoundException
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.types import Float32

    # A view the server does not know, written by Feast's remote store itself.
    unknown = FeatureView(
        name="nope",
        entities=[Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)],
        schema=[Field(name="conv_rate", dtype=Float32)],
        source=FileSource(path="data/x.parquet", timestamp_field="event_timestamp"),
    )
    key = EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=1001)])
    row = (key, {"conv_rate": Value(float_val=0.5)}, at(1), None)

    def write_unknown(s):
        s._get_provider().online_write_batch(s.config, unknown, [row], None)

    e = same_error(sides, write_unknown)
    assert isinstance(e, FeastObjectNotFoundException) and "nope" in str(e)
    # A row whose entity value is not the registry's type.
    bad_key = EntityKey(join_keys=["driver_id"], entity_values=[Value(string_val="x")])
    bad = (bad_key, {"conv_rate": Value(float_val=0.5), "acc_rate": Value(float_val=0.5)}, at(1), None)

    def write_bad(s):
        s._get_provider().online_write_batch(s.config, s.get_feature_view("driver_hourly_stats_fresh"), [bad], None)

    e = feast_serve_500(sides, write_bad)
    assert isinstance(e, RuntimeError) and "Error_code=422" in str(e) and "driver_id" in str(e), e
    # A feature missing from the rows, and a feature value of the wrong type.
    fresh = lambda s: s.get_feature_view("driver_hourly_stats_fresh")  # noqa: E731
    key = EntityKey(join_keys=["driver_id"], entity_values=[Value(int64_val=1001)])
    missing = (key, {"conv_rate": Value(float_val=0.5)}, at(1), None)
    e = feast_serve_500(sides, lambda s: s._get_provider().online_write_batch(s.config, fresh(s), [missing], None))
    assert isinstance(e, RuntimeError) and "Error_code=422" in str(e) and "acc_rate" in str(e), e
    wrong = (key, {"conv_rate": Value(string_val="high"), "acc_rate": Value(float_val=0.5)}, at(1), None)
    e = feast_serve_500(sides, lambda s: s._get_provider().online_write_batch(s.config, fresh(s), [wrong], None))
    assert isinstance(e, RuntimeError) and "Error_code=422" in str(e) and "conv_rate" in str(e), e
    # A push source nobody has: the SDK's own check, the same on both sides.
    e = same_error(sides, lambda s: s.push("nope", pd.DataFrame({"driver_id": [1]})))
    assert isinstance(e, PushSourceNotFoundException)


def test_7_a_token_protected_ingest_with_feasts_auth(tmp_path: Path) -> None:
    """`quiver serve --role ingest --host 0.0.0.0` with a push token: Feast's SDK without auth is
    refused (401) for writes and materializations; with `auth: {type: kubernetes, user_token}`
    (sent as a bearer token) both work. Reads stay open."""
    from feast import FeatureStore

    side = Side(tmp_path / "quiver", "quiver", token="ingest-t0ken")
    try:
        anonymous = FeatureStore(repo_path=str(side.client))
        authorized = FeatureStore(
            repo_path=str(client_repo(tmp_path / "quiver", side.server, side.port, "ingest-t0ken", "authorized"))
        )
        profile = pd.DataFrame(
            {"customer_id": ["c7"], "event_timestamp": [at(20)], "tier": ["gold"], "lifetime_value": [1.5],
             "is_vip": [True], "signup_ts": [at(3)]}
        )
        with pytest.raises(RuntimeError, match="Error_code=401"):
            anonymous.write_to_online_store("customer_profile", profile)
        with pytest.raises(RuntimeError, match=r"\(401\)"):
            anonymous.materialize(START, END, feature_views=["customer_profile"])
        assert side.redis.client.dbsize() == 0
        authorized.write_to_online_store("customer_profile", profile)
        authorized.materialize(START, END, feature_views=["driver_hourly_stats"])
        got = anonymous.get_online_features(
            features=["customer_profile:tier", "driver_hourly_stats:conv_rate"],
            entity_rows=[{"customer_id": "c7", "driver_id": 1001}],
        ).to_dict()
        assert got["tier"] == ["gold"]
        assert got["conv_rate"] == [pytest.approx(0.75)]
    finally:
        side.stop()
