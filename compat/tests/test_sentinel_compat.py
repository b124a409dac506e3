"""Redis Sentinel, quiver against the real Feast 0.67 (`redis_type: redis_sentinel`).

A master, a replica and a sentinel of the test's own. Feast materializes through the sentinel
and `quiver serve` answers Feast's values; then the sentinel fails over, and both sides follow
it: Feast pushes to the new master and quiver serves what it pushed, quiver pushes and Feast
reads it back, and `quiver materialize` (through the sentinel too) finds everything already
written there.
"""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_materialize_compat import (  # noqa: E402  (not tests: helpers shared with that file)
    QuiverServer,
    at,
    feast_materialize,
    make_repo,
    quiver_materialize,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what: str, ok, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.05)


@pytest.fixture
def sentinel_setup(tmp_path: Path):
    """(sentinel port, master port, replica port); the processes die with the test."""
    import redis

    procs = []

    def server(port: int, *extra: str) -> redis.Redis:
        d = tmp_path / f"redis-{port}"
        d.mkdir()
        procs.append(
            subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *extra],
                cwd=d,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        client = redis.Redis(port=port)

        def up() -> bool:
            try:
                return client.ping()
            except redis.ConnectionError:
                return False

        wait(f"redis-server on {port}", up)
        return client

    master, replica, sentinel = free_port(), free_port(), free_port()
    server(master)
    replica_client = server(replica, "--replicaof", "127.0.0.1", str(master))
    wait("the replica syncs", lambda: replica_client.info("replication").get("master_link_status") == "up")
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel}\nbind 127.0.0.1\n"
        f"sentinel monitor mymaster 127.0.0.1 {master} 1\n"
        # Only planned failovers here: a long down-after keeps a busy machine's slow answer from
        # starting an unplanned one (which would rightly lose the writes made meanwhile).
        "sentinel down-after-milliseconds mymaster 10000\n"
        # Long enough that a busy machine's failover is not cancelled half-way (which can leave
        # two masters, and clients reading the old one).
        "sentinel failover-timeout mymaster 10000\n"
    )
    procs.append(
        subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    )
    sentinel_client = redis.Redis(port=sentinel)
    wait("the sentinel names the master", lambda: _named(sentinel_client) == master)
    yield sentinel, master, replica
    for p in procs:
        p.kill()
        p.wait()


def _named(sentinel_client):
    try:
        addr = sentinel_client.sentinel_get_master_addr_by_name("mymaster")
    except Exception:
        return None
    return int(addr[1]) if addr else None


def test_feast_and_quiver_follow_the_same_sentinel(tmp_path: Path, sentinel_setup) -> None:
    import redis
    from feast import FeatureStore
    from feast.data_source import PushMode

    sentinel, master, replica = sentinel_setup
    repo = make_repo(
        tmp_path,
        "online_store:\n  type: redis\n  redis_type: redis_sentinel\n  sentinel_master: mymaster\n"
        f'  connection_string: "127.0.0.1:{sentinel}"\n',
    )
    # Feast writes through the sentinel: the master holds it.
    feast_materialize(repo)
    assert redis.Redis(port=master).dbsize() >= 5
    wait("the replica has everything", lambda: redis.Redis(port=replica).dbsize() == redis.Redis(port=master).dbsize())

    with QuiverServer(repo, "--enable-push", "--enable-keyspace-notifications") as server:
        answer = server.post(
            "/get-online-features",
            {"features": ["driver_hourly_stats:avg_daily_trips", "customer_profile:tier"],
             "entities": {"driver_id": [1001, 1003], "customer_id": ["c1", "c2"]}},
        )
        values = {n: answer["results"][i]["values"] for i, n in enumerate(answer["metadata"]["feature_names"])}
        assert values["avg_daily_trips"] == [7, 3]
        assert values["tier"] == ["gold", "bronze"]

        sentinel_client = redis.Redis(port=sentinel)

        def failover() -> bool:
            try:
                return bool(sentinel_client.execute_command("SENTINEL", "FAILOVER", "mymaster"))
            except redis.ResponseError:
                return False

        wait("the sentinel accepts the failover", failover)
        wait("the sentinel names the replica", lambda: _named(sentinel_client) == replica)
        # The failover is over when the old master follows the new one: until then there are
        # two masters, and what a client reads depends on when it asked.
        wait(
            "the old master follows the new one",
            lambda: redis.Redis(port=master).info("replication")["role"] == "slave",
            30,
        )

        # Feast, through the sentinel, pushes to the new master; quiver serves it.
        df = pd.DataFrame(
            {
                "driver_id": [1001],
                "event_timestamp": [at(14)],
                "created": [at(14)],
                "conv_rate": pd.Series([0.625], dtype="float32"),
                "acc_rate": pd.Series([0.5], dtype="float32"),
            }
        )
        FeatureStore(repo_path=str(repo)).push("driver_stats_push", df, to=PushMode.ONLINE)

        def served() -> bool:
            got = server.post(
                "/get-online-features",
                {"features": ["driver_hourly_stats_fresh:conv_rate"], "entities": {"driver_id": [1001]}},
            )
            return got["results"][1]["values"] == [0.625]

        wait("quiver serves what Feast pushed to the new master", served, 10)

        # quiver pushes to the new master; Feast reads it back through the sentinel.
        body = {
            "driver_id": [1002],
            "event_timestamp": [at(15).isoformat()],
            "created": [at(15).isoformat()],
            "conv_rate": [0.375],
            "acc_rate": [0.25],
        }
        result = server.post("/push", {"push_source_name": "driver_stats_push", "df": body, "to": "online"})
        assert result["written"] == 1
    got = FeatureStore(repo_path=str(repo)).get_online_features(
        features=["driver_hourly_stats_fresh:conv_rate"],
        entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}],
    ).to_dict()
    roles = {port: redis.Redis(port=port).info("replication")["role"] for port in (master, replica)}
    named = _named(redis.Redis(port=sentinel))
    assert got["conv_rate"] == [0.625, 0.375], f"Feast read {got}; roles {roles}; the sentinel names {named}"
    # `quiver materialize` goes through the sentinel too: the new master already has it all.
    assert "0 written" in quiver_materialize(repo)
