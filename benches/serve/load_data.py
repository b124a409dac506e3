"""Writes the benchmark's rows into the online store with Feast's own code
(FeatureStore.write_to_online_store), so both servers read data Feast wrote.

Usage: python load_data.py REPO_DIR N_DRIVERS
"""

import sys
from datetime import datetime, timezone

import pandas as pd
from feast import FeatureStore


def main() -> None:
    repo, n = sys.argv[1], int(sys.argv[2])
    store = FeatureStore(repo_path=repo)
    now = datetime.now(timezone.utc)
    ids = list(range(1, n + 1))
    df = pd.DataFrame(
        {
            "driver_id": pd.Series(ids, dtype="int64"),
            "event_timestamp": [now] * n,
            "f0": pd.Series([i * 0.001 for i in ids], dtype="float32"),
            "f1": pd.Series(ids, dtype="int64"),
            "f2": [f"zone-{i % 97}" for i in ids],
            "f3": [i / 7 for i in ids],
            "f4": pd.Series([i * 3 for i in ids], dtype="int64"),
            "f5": pd.Series([0.5] * n, dtype="float32"),
            "f6": [f"tier-{i % 5}" for i in ids],
            "f7": pd.Series([i % 1000 for i in ids], dtype="int64"),
            "f8": [i * 0.25 for i in ids],
            "f9": [i % 2 == 0 for i in ids],
        }
    )
    for start in range(0, n, 5000):
        store.write_to_online_store("bench", df.iloc[start : start + 5000])
    print(f"wrote {n} rows to the online store")


if __name__ == "__main__":
    main()
