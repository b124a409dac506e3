"""A KServe transformer that adds online features from the quiver sidecar beside it.

Request:  {"instances": [{"driver_id": 1001, "distance_km": 3.2}, ...]}
To model: {"instances": [[conv_rate, acc_rate, avg_daily_trips, distance_km], ...]}

KServe passes --model_name and --predictor_host; the sidecar answers on localhost.
"""

import argparse
import json
import os
import urllib.request

import kserve

FEATURE_SERVER_URL = os.environ.get(
    "FEATURE_SERVER_URL", "http://localhost:6566/get-online-features"
)
FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
]


def online_features(driver_ids):
    """Feast's online API, answered by the sidecar from its in-memory cache."""
    body = json.dumps(
        {"features": FEATURES, "entities": {"driver_id": driver_ids}}
    ).encode()
    request = urllib.request.Request(
        FEATURE_SERVER_URL, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=1.0) as response:
        answer = json.load(response)
    # Column-major: one result per requested column, entity column first.
    columns = {
        name: result["values"]
        for name, result in zip(answer["metadata"]["feature_names"], answer["results"])
    }
    return [
        [columns[name.split(":")[1]][row] for name in FEATURES]
        for row in range(len(driver_ids))
    ]


class DriverFeatures(kserve.Model):
    def __init__(self, name, predictor_host):
        super().__init__(name)
        self.predictor_host = predictor_host
        self.ready = True

    def preprocess(self, payload, headers=None):
        instances = payload["instances"]
        features = online_features([i["driver_id"] for i in instances])
        return {
            "instances": [
                [0.0 if v is None else float(v) for v in row] + [float(i["distance_km"])]
                for row, i in zip(features, instances)
            ]
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--predictor_host", required=True)
    args, _ = parser.parse_known_args()
    model = DriverFeatures(args.model_name, args.predictor_host)
    kserve.ModelServer().start([model])
