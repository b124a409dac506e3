"""The point-in-time join as one Spark SQL plan without the rows x versions blow-up: entity rows
and feature rows in one union, partitioned by the join key and ordered by time (feature rows
before entity rows at the same instant: the bound is inclusive; among feature rows the created
time ascending), each entity row taking the last feature row before it (`last(..., true)` over
the running window), then the ttl applied and input order restored. One shuffle of both
inputs. Written by Spark straight to Parquet (nothing passes through this client).

Usage: spark_sql_join.py sc://HOST:PORT FEATURES.parquet ENTITIES.parquet OUT_DIR
"""
import sys
import time

from pyspark.sql import SparkSession

remote, features, entities, out = sys.argv[1:5]
spark = SparkSession.builder.remote(remote).getOrCreate()
spark.conf.set("spark.sql.session.timeZone", "UTC")
began = time.time()
spark.read.parquet(entities).selectExpr(
    "driver_id", "event_timestamp", "monotonically_increasing_id() AS rid"
).createOrReplaceTempView("e")
spark.read.parquet(features).createOrReplaceTempView("f")
spark.sql("""
WITH b AS (
  SELECT min(event_timestamp) - INTERVAL 2 DAYS AS lo, max(event_timestamp) AS hi FROM e
),
u AS (
  SELECT driver_id, event_timestamp AS ts, rid, 1 AS side, CAST(NULL AS TIMESTAMP) AS created,
         CAST(NULL AS STRUCT<ts: TIMESTAMP, f0: FLOAT, f1: DOUBLE, f2: BIGINT, f3: BIGINT, f4: STRING>) AS v
  FROM e
  UNION ALL
  SELECT driver_id, event_timestamp, NULL, 0, created,
         named_struct('ts', event_timestamp, 'f0', f0, 'f1', f1, 'f2', f2, 'f3', f3, 'f4', f4)
  FROM f CROSS JOIN b WHERE f.event_timestamp BETWEEN b.lo AND b.hi
),
w AS (
  SELECT driver_id, ts, rid, side,
         last(v, true) OVER (PARTITION BY driver_id ORDER BY ts, side, created
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS v
  FROM u
)
SELECT driver_id, ts AS event_timestamp,
       CASE WHEN v.ts >= ts - INTERVAL 2 DAYS THEN v.f0 END AS f0,
       CASE WHEN v.ts >= ts - INTERVAL 2 DAYS THEN v.f1 END AS f1,
       CASE WHEN v.ts >= ts - INTERVAL 2 DAYS THEN v.f2 END AS f2,
       CASE WHEN v.ts >= ts - INTERVAL 2 DAYS THEN v.f3 END AS f3,
       CASE WHEN v.ts >= ts - INTERVAL 2 DAYS THEN v.f4 END AS f4,
       rid
FROM w WHERE side = 1
""").write.mode("overwrite").parquet(out)
print(f"spark-sql join written in {time.time() - began:.2f} s")
