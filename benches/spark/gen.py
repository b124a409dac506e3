"""Writes the Spark benchmark's data as Parquet: FEATURE_ROWS rows of one feature view (5
features, whole-second event times over 30 days, a created column) over FEATURE_ROWS/10
drivers, and ENTITY_ROWS entity rows (5% unknown drivers, duplicates included).

Usage: gen.py DIR FEATURE_ROWS ENTITY_ROWS
"""
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

out, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(20)
drivers = max(n // 10, 1)
t0 = int(np.datetime64("2026-01-01T00:00:00", "s").astype("int64"))
span = 30 * 86400
segments = np.array([f"segment-{i}" for i in range(50)], dtype=object)
chunk = 2_000_000
writer = None
for s in range(0, n, chunk):
    k = min(n, s + chunk) - s
    ts = (t0 + rng.integers(0, span, k)) * 1_000_000
    table = pa.table({
        "driver_id": pa.array(rng.integers(0, drivers, k), pa.int64()),
        "event_timestamp": pa.array(ts, pa.timestamp("us", "UTC")),
        "created": pa.array(ts + rng.integers(0, 3600, k) * 1_000_000, pa.timestamp("us", "UTC")),
        "f0": pa.array(rng.random(k).astype("float32")),
        "f1": pa.array(rng.random(k)),
        "f2": pa.array(rng.integers(0, 1000, k), pa.int64()),
        "f3": pa.array(np.arange(s, s + k), pa.int64()),
        "f4": pa.array(segments[rng.integers(0, 50, k)]),
    })
    if writer is None:
        writer = pq.ParquetWriter(f"{out}/driver_stats.parquet", table.schema)
    writer.write_table(table, row_group_size=512 * 1024)
writer.close()
pq.write_table(pa.table({
    "driver_id": pa.array(rng.integers(0, int(drivers * 1.05) + 1, m), pa.int64()),
    "event_timestamp": pa.array((t0 + rng.integers(0, span, m)) * 1_000_000, pa.timestamp("us", "UTC")),
}), f"{out}/entities.parquet")
print(f"{n} feature rows over {drivers} drivers, {m} entity rows")
