"""KServe's own Feast transformer sample, unchanged, against quiver's `/get-online-features`.

The sample (compat/kserve_feast_sample/driver_transformer, vendored byte for byte from KServe;
started by run_driver_transformer.py, since the sample's own __main__.py cannot start with a
KServe that has the modules it imports: see that folder's README) is a `kserve.Model` whose preprocess posts `{"features": [...], "entities": {"driver_id": [...]},
"full_feature_names": true}` to a Feast feature server and reshapes the answer into
`[acc_rate, avg_daily_trips, conv_rate, driver_id]` per instance for its predictor. Here:

- features are written into a private redis-server by this test, in Feast's byte layout
  (entity key v3 + project, MurmurHash3 field names, serialized `Value`s, `_ts:` timestamps),
  independently of quiver's own writers;
- `quiver serve` serves examples/quickstart (its definitions applied with `quiver apply`) from it;
- the sample runs with the real `kserve` package (its model server, its V1 protocol), pointed at
  quiver with the flags KServe's docs give it, in front of a predictor that echoes its inputs;
- a V1 predict through the transformer returns exactly the stored features, in the sample's
  order, with nulls for a driver that has none (Feast's NOT_FOUND).

The kserve venv (compat/setup-kserve-venv.sh; QUIVER_KSERVE_VENV) runs the sample; this test
itself needs only the standard library and `redis`. Without the venv it skips, or fails when
CI is set.
"""

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fixture_helpers import (  # noqa: E402
    free_port,
    log_of,
    post_json,
    redis_server,
    spawn,
)

ROOT = Path(__file__).resolve().parents[2]
QUIVER = Path(os.environ.get("QUIVER_BIN", ROOT / "target" / "debug" / "quiver")).resolve()
SAMPLE = ROOT / "compat" / "kserve_feast_sample"
KSERVE_VENV = Path(
    os.environ.get("QUIVER_KSERVE_VENV", Path.home() / ".cache" / "quiver-ci" / "kserve-venv")
)
KSERVE_PYTHON = KSERVE_VENV / "bin" / "python"
MODEL = "driver-ranker"
PROJECT = "quickstart"

# Values exact in float32, so JSON carries them without rounding.
STORED = {
    1001: {"conv_rate": 0.5, "acc_rate": 0.75, "avg_daily_trips": 10},
    1002: {"conv_rate": 0.25, "acc_rate": 0.125, "avg_daily_trips": 20},
    1004: {"conv_rate": 0.875, "acc_rate": 1.0, "avg_daily_trips": 0},
}


def kserve_available() -> bool:
    if not KSERVE_PYTHON.exists():
        return False
    probe = subprocess.run(
        [str(KSERVE_PYTHON), "-c", "import kserve, requests, numpy"], capture_output=True
    )
    return probe.returncode == 0


if not kserve_available():
    reason = (
        f"no kserve venv at {KSERVE_VENV} (compat/setup-kserve-venv.sh makes it; "
        "QUIVER_KSERVE_VENV names another)"
    )
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytest.skip(reason, allow_module_level=True)


# ---- Feast's Redis layout, written by hand (shared/feast-compat.md section 3) ----


def murmur3_32(data: bytes, seed: int = 0) -> int:
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    full = len(data) // 4 * 4
    for i in range(0, full, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[full:]
    k = 0
    for i, b in enumerate(tail):
        k |= b << (8 * i)
    if tail:
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def value_float(x: float) -> bytes:  # Value.float_val = 6 (fixed32)
    return bytes([6 << 3 | 5]) + struct.pack("<f", x)


def value_int64(x: int) -> bytes:  # Value.int64_val = 4 (varint)
    return bytes([4 << 3]) + varint(x)


def timestamp(seconds: int) -> bytes:  # google.protobuf.Timestamp.seconds = 1
    return bytes([1 << 3]) + varint(seconds)


def redis_key(driver_id: int) -> bytes:
    name = b"driver_id"
    key = struct.pack("<I", 1) + struct.pack("<II", 2, len(name)) + name
    key += struct.pack("<II", 4, 8) + struct.pack("<q", driver_id)
    return key + PROJECT.encode()


def field(view: str, feature: str) -> bytes:
    return murmur3_32(f"{view}:{feature}".encode()).to_bytes(4, "little")


def test_murmur3_matches_feasts_layout():
    # The example in shared/feast-compat.md, checked against Feast.
    assert field("driver_hourly_stats", "conv_rate") == bytes.fromhex("6160e3da")
    assert redis_key(1001)[:-len(PROJECT)].hex() == (
        "01000000" "02000000" "09000000" + b"driver_id".hex() + "04000000" "08000000" "e903000000000000"
    )


def write_features(redis_port: int) -> None:
    import redis

    client = redis.Redis(port=redis_port)
    now = int(time.time())
    for driver_id, features in STORED.items():
        client.hset(
            redis_key(driver_id),
            mapping={
                field("driver_hourly_stats", "conv_rate"): value_float(features["conv_rate"]),
                field("driver_hourly_stats", "acc_rate"): value_float(features["acc_rate"]),
                field("driver_hourly_stats", "avg_daily_trips"): value_int64(
                    features["avg_daily_trips"]
                ),
                b"_ts:driver_hourly_stats": timestamp(now),
            },
        )


def wait_ready(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited:\n{log_of(proc)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready:\n{log_of(proc)}")


def test_kserves_feast_sample_unchanged_against_quivers_online_api(tmp_path):
    assert QUIVER.exists(), f"{QUIVER} (QUIVER_BIN) is not built"
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "examples" / "quickstart", repo)
    procs = []
    with redis_server(tmp_path) as redis_port:
        (repo / "feature_store.yaml").write_text(
            f"project: {PROJECT}\n"
            "registry: data/registry.db\n"
            "provider: local\n"
            "online_store:\n"
            "  type: redis\n"
            f"  connection_string: \"127.0.0.1:{redis_port}\"\n"
            "offline_store:\n"
            "  type: file\n"
            "entity_key_serialization_version: 3\n"
        )
        subprocess.run([str(QUIVER), "apply", "--repo", str(repo)], check=True, capture_output=True)
        write_features(redis_port)
        try:
            quiver_port = free_port()
            quiver = spawn([QUIVER, "serve", "--repo", repo, "--port", quiver_port])
            procs.append(quiver)
            wait_ready(f"http://127.0.0.1:{quiver_port}/health", quiver, "quiver serve")

            predictor_port = free_port()
            predictor = spawn(
                [
                    KSERVE_PYTHON, SAMPLE / "echo_model.py", "--model_name", MODEL,
                    "--http_port", predictor_port, "--enable_grpc", "false",
                ]
            )
            procs.append(predictor)
            # The sample with the flags KServe's docs give it (driver_transformer_new.yaml), the
            # feature server being quiver.
            transformer_port = free_port()
            transformer = subprocess.Popen(
                [
                    str(KSERVE_PYTHON), "run_driver_transformer.py",
                    "--model_name", MODEL,
                    "--predictor_host", f"127.0.0.1:{predictor_port}",
                    "--http_port", str(transformer_port),
                    "--enable_grpc", "false",
                    "--feast_serving_url", f"127.0.0.1:{quiver_port}",
                    "--entity_id_name", "driver_id",
                    "--feature_refs",
                    "driver_hourly_stats:conv_rate",
                    "driver_hourly_stats:acc_rate",
                    "driver_hourly_stats:avg_daily_trips",
                ],
                cwd=SAMPLE,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp_path / "transformer.log", "wb"),
            )
            transformer.log_path = str(tmp_path / "transformer.log")
            procs.append(transformer)
            wait_ready(f"http://127.0.0.1:{predictor_port}/v1/models/{MODEL}", predictor, "echo model")
            wait_ready(
                f"http://127.0.0.1:{transformer_port}/v1/models/{MODEL}", transformer, "the sample"
            )

            # 1003 has no features: Feast answers null with NOT_FOUND, the sample passes it on.
            ids = [1001, 1002, 1003, 1004]
            status, text = post_json(
                f"http://127.0.0.1:{transformer_port}/v1/models/{MODEL}:predict",
                {"instances": [[i] for i in ids]},
            )
            assert status == 200, f"{status} {text}\n{log_of(transformer)}"
            got = json.loads(text)["predictions"]
            expected = [
                [STORED[i]["acc_rate"], STORED[i]["avg_daily_trips"], STORED[i]["conv_rate"], i]
                if i in STORED
                else [None, None, None, i]
                for i in ids
            ]
            assert got == expected, f"{got} != {expected}\n{log_of(transformer)}"

            # The same question to quiver directly: what the sample read is what is stored.
            status, text = post_json(
                f"http://127.0.0.1:{quiver_port}/get-online-features",
                {
                    "features": ["driver_hourly_stats:conv_rate"],
                    "entities": {"driver_id": ids},
                    "full_feature_names": True,
                },
            )
            answer = json.loads(text)
            assert answer["metadata"]["feature_names"] == [
                "driver_id",
                "driver_hourly_stats__conv_rate",
            ]
            assert answer["results"][1]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND", "PRESENT"]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
