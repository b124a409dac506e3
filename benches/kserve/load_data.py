"""Writes N drivers' features into the online store with Feast's own code
(FeatureStore.write_to_online_store), so `feast serve` and quiver read data Feast wrote.

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
            "conv_rate": pd.Series([(i % 100) / 128 for i in ids], dtype="float32"),
            "acc_rate": pd.Series([(i % 50) / 64 for i in ids], dtype="float32"),
            "avg_daily_trips": pd.Series([i % 40 for i in ids], dtype="int64"),
        }
    )
    for start in range(0, n, 5000):
        store.write_to_online_store("driver_hourly_stats", df.iloc[start : start + 5000])
    print(f"wrote {n} drivers to the online store")


if __name__ == "__main__":
    main()
