"""Small Parquet files for the quickstart sources (examples/quickstart and its Python twin
compat/feast_repo). Feast may read a source's file while applying, so repos get these before
`feast apply`. Shared by generate_fixtures.py and the compatibility tests."""

from datetime import datetime, timezone
from pathlib import Path

import pandas as pd


def write_quickstart_parquet(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    t0 = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    pd.DataFrame(
        {
            "driver_id": pd.Series([1001, 1002], dtype="int64"),
            "event_timestamp": [t0, t0],
            "created": [t0, t0],
            "conv_rate": pd.Series([0.5, 0.25], dtype="float32"),
            "acc_rate": pd.Series([0.75, 0.5], dtype="float32"),
            "avg_daily_trips": pd.Series([10, 20], dtype="int64"),
            "recent_zones": [[1, 2], [3]],
        }
    ).to_parquet(data_dir / "driver_stats.parquet")
    pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "event_timestamp": [t0, t0],
            "tier": ["gold", "silver"],
            "ltv": [100.5, 20.0],
            "is_vip": [True, False],
            "signup_ts": [t0, t0],
        }
    ).to_parquet(data_dir / "customer_profile.parquet")
    pd.DataFrame(
        {
            "driver_id": pd.Series([1001], dtype="int64"),
            "customer_id": ["c1"],
            "event_timestamp": [t0],
            "rides_together": pd.Series([3], dtype="int64"),
            "avg_rating": [4.5],
        }
    ).to_parquet(data_dir / "driver_customer.parquet")
