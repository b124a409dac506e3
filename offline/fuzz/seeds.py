"""Writes the seed corpus of the flight_upload and flight_command fuzz targets: real Arrow IPC
streams as pyarrow writes them (what Feast's client uploads), and Feast's command JSON.
Run with any Python that has pyarrow: `python offline/fuzz/seeds.py` (from the repo root)."""
import datetime as dt
import json
import os

import pyarrow as pa

here = os.path.dirname(os.path.abspath(__file__))
upload = os.path.join(here, "corpus", "flight_upload")
command = os.path.join(here, "corpus", "flight_command")
os.makedirs(upload, exist_ok=True)
os.makedirs(command, exist_ok=True)


def write(name, table, compression=None):
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as w:
        w.write_table(table, max_chunksize=3)
    with open(os.path.join(upload, name), "wb") as f:
        f.write(sink.getvalue().to_pybytes())


t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
entities = pa.table({
    "driver_id": pa.array([1, 2, 3, 4], pa.int64()),
    "event_timestamp": pa.array([t0] * 4, pa.timestamp("us", tz="UTC")),
})
write("entities.arrow", entities)
write("entities_lz4.arrow", entities, "lz4")
write("entities_zstd.arrow", entities, "zstd")
write("strings.arrow", pa.table({
    "customer": pa.array(["a", None, "ccc", ""], pa.string()),
    "big": pa.array(["x" * 5, "y", None, "z"], pa.large_string()),
    "event_timestamp": pa.array([t0] * 4, pa.timestamp("ns")),
}))
write("dictionary.arrow", pa.table({
    "city": pa.array(["sf", "nyc", "sf", None]).dictionary_encode(),
    "n": pa.array([1.5, None, float("nan"), -0.0], pa.float64()),
}))
write("nested.arrow", pa.table({
    "tags": pa.array([[1, 2], [], None, [3]], pa.list_(pa.int32())),
    "s": pa.array([{"a": 1, "b": "x"}, None, {"a": 2, "b": None}, {"a": None, "b": "y"}]),
    "ok": pa.array([True, False, None, True]),
}))
write("nulls.arrow", pa.table({"driver_id": pa.nulls(4), "event_timestamp": pa.nulls(4)}))
write("ree.arrow", pa.table({
    "r": pa.RunEndEncodedArray.from_arrays(pa.array([2, 4], pa.int32()), pa.array([7, 8], pa.int64())),
}))
write("empty.arrow", entities.slice(0, 0))

feast = {
    "command_id": "0c3a3f1e",
    "api": "get_historical_features",
    "feature_view_names": ["driver_hourly_stats", "transformed_conv_rate"],
    "feature_refs": ["driver_hourly_stats:conv_rate", "transformed_conv_rate:conv_rate_plus_val1"],
    "name_aliases": [None, "alias"],
    "project": "quickstart",
    "full_feature_names": False,
}
commands = {
    "historical.json": feast,
    "columns.json": {"command_id": "1", "api": "get_table_column_names_and_types_from_data_source",
                     "data_source_proto": "CgZkcml2ZXI="},
    "write.json": {"command_id": "2", "api": "offline_write_batch", "feature_view_names": ["v"],
                   "name_aliases": [None], "feature_refs": []},
    "no_api.json": {"command_id": "3"},
    "bad_params.json": dict(feast, full_feature_names="yes", name_aliases=None),
}
for name, c in commands.items():
    with open(os.path.join(command, name), "w") as f:
        json.dump(c, f)

# The finding of issue 19: a compressed buffer declaring 1 TiB (arrow allocated it before
# decompressing, which aborted the server). The first record batch's first buffer is
# driver_id's values (no validity buffer without nulls).
import struct

with open(os.path.join(upload, "entities_lz4.arrow"), "rb") as f:
    data = bytearray(f.read())
(schema_len,) = struct.unpack_from("<i", data, 4)
at = 8 + schema_len
(batch_len,) = struct.unpack_from("<i", data, at + 4)
body = at + 8 + batch_len
assert 0 < struct.unpack_from("<q", data, body)[0] <= 64, "unexpected layout"
struct.pack_into("<q", data, body, 1 << 40)
with open(os.path.join(upload, "lz4_declares_a_terabyte.arrow"), "wb") as f:
    f.write(bytes(data))
