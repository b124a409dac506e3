"""Feast 0.67's Spark offline store on the benchmark repo (offline_store: type: spark with
spark.remote), get_historical_features(...).to_arrow(), written to Parquet.

Usage: feast_spark.py REPO ENTITIES.parquet OUT.parquet
"""
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
from feast import FeatureStore

repo, entities, out = sys.argv[1:4]
store = FeatureStore(repo_path=repo)
entity_df = pd.read_parquet(entities)
began = time.time()
table = store.get_historical_features(
    entity_df=entity_df, features=[f"driver_stats:f{i}" for i in range(5)]
).to_arrow()
pq.write_table(table, out)
print(f"feast-spark: {table.num_rows} rows in {time.time() - began:.2f} s")
