"""Feast definitions equivalent to quiver's examples/quickstart/features.yaml.

Every entity, data source, feature view and feature service of the quiver
example is mirrored here with the same names, join keys, value types, TTLs,
tags, descriptions, field mappings and feature service projections, so that
`feast apply` on this folder writes the registry that quiver must read.

One object has no quiver counterpart on purpose: the on-demand feature view
`ride_features`. Feast stores it as pickled Python, which quiver cannot run;
it is here so the registry contains an object quiver has to skip gracefully.

The parquet files named by the file sources do not need to exist for
`feast apply` to describe them; compat/generate_fixtures.py creates small ones
in a temporary copy of this folder anyway.
"""

from datetime import timedelta

import pandas as pd

from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

# Entities

driver = Entity(
    name="driver",
    join_keys=["driver_id"],
    value_type=ValueType.INT64,
    description="A driver on the platform",
)

customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A customer who books rides",
)

# Data sources

driver_stats_source = FileSource(
    name="driver_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

customer_profile_source = FileSource(
    name="customer_profile_source",
    path="data/customer_profile.parquet",
    timestamp_field="event_timestamp",
    field_mapping={"ltv": "lifetime_value"},
)

driver_customer_source = FileSource(
    name="driver_customer_source",
    path="data/driver_customer.parquet",
    timestamp_field="event_timestamp",
)

driver_stats_push = PushSource(
    name="driver_stats_push",
    batch_source=driver_stats_source,
)

ride_request = RequestSource(
    name="ride_request",
    schema=[Field(name="distance_km", dtype=Float64)],
)

# Feature views

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    source=driver_stats_source,
    online=True,
    tags={"team": "driver_performance"},
    description="Hourly driver statistics",
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
        Field(name="recent_zones", dtype=Array(Int32)),
    ],
)

driver_hourly_stats_fresh = FeatureView(
    name="driver_hourly_stats_fresh",
    entities=[driver],
    ttl=timedelta(hours=2),
    source=driver_stats_push,
    online=True,
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
    ],
)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(seconds=0),
    source=customer_profile_source,
    schema=[
        Field(name="tier", dtype=String),
        Field(name="lifetime_value", dtype=Float64),
        Field(name="is_vip", dtype=Bool),
        Field(name="signup_ts", dtype=UnixTimestamp),
    ],
)

driver_customer_affinity = FeatureView(
    name="driver_customer_affinity",
    entities=[driver, customer],
    ttl=timedelta(days=7),
    source=driver_customer_source,
    schema=[
        Field(name="rides_together", dtype=Int64),
        Field(name="avg_rating", dtype=Float64),
    ],
)

# On-demand feature view (no quiver counterpart: quiver must load the registry
# anyway and refuse requests for it with a clear error).


@on_demand_feature_view(
    sources=[driver_hourly_stats, ride_request],
    schema=[Field(name="conv_per_km", dtype=Float64)],
)
def ride_features(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["conv_per_km"] = inputs["conv_rate"] / inputs["distance_km"]
    return out


# Feature services

driver_ranking = FeatureService(
    name="driver_ranking",
    features=[
        driver_hourly_stats[["conv_rate", "acc_rate"]],
        customer_profile,
    ],
)

ride_scoring = FeatureService(
    name="ride_scoring",
    description="Features for scoring a ride request",
    features=[
        driver_hourly_stats,
        driver_customer_affinity[["rides_together"]],
        driver_hourly_stats_fresh[["conv_rate"]].with_name("fresh"),
    ],
)
