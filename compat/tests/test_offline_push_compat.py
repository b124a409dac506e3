"""Feast 0.67's remote offline store pushing to `quiver offline serve`, on `feast init`'s template.

A push to the offline store through Feast's SDK with `offline_store: {type: remote}` asks the
server for `get_table_column_names_and_types_from_data_source` (the client checks its dataframe
against the answer) and then sends the table with `offline_write_batch`. Here:

- `store.push(push_source, df, to=PushMode.OFFLINE)` through quiver's Flight server, and the same
  push into a copy of the repo with Feast's own file offline store: `get_historical_features`
  after it returns the pushed values, and the same frame from both; the source file keeps its
  schema and gains the row, as Feast's file store leaves it.
- bad pushes raise in the SDK and write nothing: a column of the wrong type, and a data source or
  feature view the server's registry does not have (Feast's remote client called with them
  directly, naming a real file: the server reads names, never a path from the request).
"""

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
FEAST_CLI = Path(sys.executable).parent / "feast"
sys.path.insert(0, str(ROOT / "compat"))

from fixture_helpers import free_port, log_of, spawn  # noqa: E402

FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
    "driver_hourly_stats:driver_config",
]


def env() -> dict:
    e = dict(os.environ, TZ="UTC")
    e.pop("FEATURE_STORE_YAML_BASE64", None)
    return e


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("push_template")
    subprocess.run([str(FEAST_CLI), "init", "demo_repo"], cwd=root, check=True, capture_output=True, env=env())
    return root / "demo_repo" / "feature_repo"


def applied_copy(template: Path, at: Path) -> Path:
    import shutil

    shutil.copytree(template, at)
    subprocess.run([str(FEAST_CLI), "apply"], cwd=at, check=True, capture_output=True, env=env())
    return at


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


class OfflineServer:
    """`quiver offline serve --repo repo` on a free port."""

    def __init__(self, repo: Path):
        self.port = free_port()
        self.proc = spawn([QUIVER, "offline", "serve", "--repo", repo, "--port", str(self.port)])
        wait_port(self.port, self.proc, "quiver offline serve")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def remote_client(at: Path, repo: Path, port: int) -> Path:
    """A Feast client of `repo`'s registry whose offline store is quiver's Flight server."""
    at.mkdir()
    (at / "feature_store.yaml").write_text(
        f"project: demo_repo\nregistry: {repo / 'data' / 'registry.db'}\nprovider: local\n"
        f"online_store:\n  type: sqlite\n  path: {at / 'online.db'}\n"
        f"offline_store:\n  type: remote\n  host: 127.0.0.1\n  port: {port}\n"
        "entity_key_serialization_version: 3\n"
    )
    return at


def push_df(at: datetime, conv_rate=0.125, trips=4242):
    """A stream event as the template's test_workflow.py builds one (naive times, dicts for the
    Struct columns, JSON text for the Json one)."""
    import json

    import pandas as pd

    return pd.DataFrame.from_dict(
        {
            "driver_id": [1001],
            "event_timestamp": [at],
            "created": [at],
            "conv_rate": [conv_rate],
            "acc_rate": [0.5],
            "avg_daily_trips": [trips],
            "driver_metadata": [{"vehicle_type": "truck", "rating": "5.0"}],
            "driver_config": [json.dumps({"max_distance_km": 500, "preferred_zones": ["north"]})],
            "driver_profile": [{"name": "driver_1001_pushed", "age": "30"}],
        }
    )


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


def test_a_push_to_offline_through_quiver_reads_back_as_feasts_file_store_does(template, tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    from feast import FeatureStore
    from feast.data_source import PushMode

    feast_repo = applied_copy(template, tmp_path / "feast")
    quiver_repo = applied_copy(template, tmp_path / "quiver")
    source = quiver_repo / "data" / "driver_stats.parquet"
    before = pq.read_table(source)
    at = now() - timedelta(minutes=5)
    entity_df = pd.DataFrame(
        {
            "driver_id": [1001, 1002],
            "event_timestamp": [pd.Timestamp(at + timedelta(seconds=1), tz="UTC")] * 2,
        }
    )

    FeatureStore(str(feast_repo)).push("driver_stats_push_source", push_df(at), to=PushMode.OFFLINE)
    theirs = FeatureStore(str(feast_repo)).get_historical_features(entity_df, FEATURES).to_df()

    with OfflineServer(quiver_repo) as server:
        store = FeatureStore(str(remote_client(tmp_path / "client", quiver_repo, server.port)))
        store.push("driver_stats_push_source", push_df(at), to=PushMode.OFFLINE)
        ours = store.get_historical_features(entity_df, FEATURES).to_df()

    after = pq.read_table(source)
    assert after.schema == before.schema
    assert after.num_rows == before.num_rows + 1
    pushed = ours[ours["driver_id"] == 1001].iloc[0]
    assert pushed["conv_rate"] == pytest.approx(0.125)
    assert pushed["avg_daily_trips"] == 4242
    key = ["driver_id", "event_timestamp"]
    ours = ours.sort_values(key).reset_index(drop=True)
    theirs = theirs.sort_values(key).reset_index(drop=True)[list(ours.columns)]
    pd.testing.assert_frame_equal(ours, theirs)


def test_bad_pushes_raise_in_the_sdk_and_write_nothing(template, tmp_path):
    import pyarrow as pa

    from feast import FeatureStore, FeatureView, Field, FileSource
    from feast.data_source import PushMode
    from feast.errors import DataSourceObjectNotFoundException, FeastError, FeatureViewNotFoundException
    from feast.infra.offline_stores.remote import RemoteOfflineStore
    from feast.types import Float32

    repo = applied_copy(template, tmp_path / "quiver")
    source = repo / "data" / "driver_stats.parquet"
    before = source.read_bytes()

    with OfflineServer(repo) as server:
        store = FeatureStore(str(remote_client(tmp_path / "client", repo, server.port)))
        # A column of the wrong type, by the SDK's two routes.
        bad = push_df(now(), conv_rate="fast")
        with pytest.raises(FeastError) as e:
            store.write_to_offline_store("driver_hourly_stats", bad)
        assert "conv_rate" in str(e.value)
        with pytest.raises(FeastError) as e:
            store.push("driver_stats_push_source", bad, to=PushMode.OFFLINE)
        assert "conv_rate" in str(e.value)

        # Names the server's registry lacks, with the path of the real source file.
        rogue = FileSource(name="rogue_source", path=str(source), timestamp_field="event_timestamp")
        with pytest.raises(DataSourceObjectNotFoundException) as e:
            list(RemoteOfflineStore().get_table_column_names_and_types_from_data_source(store.config, rogue))
        assert "rogue_source" in str(e.value)
        # `feast apply`'s check of a source passes as Feast's file store's does (it only logs).
        RemoteOfflineStore().validate_data_source(store.config, rogue)
        view = FeatureView(name="rogue_view", entities=[], schema=[Field(name="conv_rate", dtype=Float32)],
                           source=rogue)
        table = pa.Table.from_pandas(push_df(now()))
        with pytest.raises(FeatureViewNotFoundException) as e:
            RemoteOfflineStore.offline_write_batch(store.config, view, table, None)
        assert "rogue_view" in str(e.value)
        assert server.proc.poll() is None, log_of(server.proc)

    assert source.read_bytes() == before
    assert sorted(p.name for p in source.parent.iterdir() if p.name.startswith(".")) == []
