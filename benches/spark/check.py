"""Compares the Spark benchmark's answers with quiver's (DataFusion) row by row: spark-sql and
quiver-spark must be equal in input order; Feast's Spark store collapses duplicate entity rows
and returns its own order, so it is compared per distinct (driver, time).

Usage: check.py OUT_DIR
"""
import os
import sys

import pyarrow.parquet as pq

out = sys.argv[1]


def load(name):
    path = f"{out}/{name}.parquet"
    return pq.read_table(path).to_pandas() if os.path.exists(path) else None


def differing(a, b, columns):
    return {c: int((~((a[c].isna() & b[c].isna()) | (a[c] == b[c]))).sum()) for c in columns}


q = load("quiver")
if q is None:
    sys.exit("check          no quiver output to compare with")
features = ["f0", "f1", "f2", "f3", "f4"]
for name in ["spark-sql", "quiver-spark"]:
    o = load(name)
    if o is None:
        continue
    if "rid" in o:
        o = o.sort_values("rid").reset_index(drop=True)
    if len(o) != len(q):
        print(f"check          {name}: {len(o)} rows, quiver {len(q)}: DIFFERENT")
        continue
    diff = differing(q, o, ["driver_id"] + features)
    verdict = "equal" if not any(diff.values()) else f"DIFFERENT {diff}"
    print(f"check          quiver vs {name} on all {len(q)} rows in input order "
          f"({int(q['f3'].notna().sum())} with features): {verdict}")
f = load("feast-spark")
if f is not None:
    key = ["driver_id", "event_timestamp"]
    qd = q.drop_duplicates(key).sort_values(key).reset_index(drop=True)
    fd = f.drop_duplicates(key).sort_values(key).reset_index(drop=True)
    line = (f"check          feast-spark: {len(f)} rows for {len(q)} entity rows "
            f"({len(q) - len(qd)} duplicate entity rows in the input)")
    if len(qd) == len(fd):
        diff = differing(qd, fd, features)
        line += "; per distinct (driver, time): " + (
            "equal" if not any(diff.values()) else f"DIFFERENT {diff}")
    print(line)
