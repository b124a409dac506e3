"""Latency of one on-demand request: quiver (through Feast's transformation service) and
`feast serve`, the same request, sequentially on a kept-alive connection. Run by run.sh."""

import argparse
import http.client
import json
import socket
import statistics
import time
from urllib.parse import urlparse

BODY = {
    "feature_service": "driver_activity_v1",
    "entities": {"driver_id": [1001], "val_to_add": [1000], "val_to_add_2": [10]},
}


def wait(host: str, port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on {host}:{port}")


def run(url: str, body: dict, n: int, warmup: int = 30):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    data = json.dumps(body)
    headers = {"content-type": "application/json"}
    times = []
    answer = None
    for i in range(warmup + n):
        t0 = time.perf_counter()
        conn.request("POST", "/get-online-features", data, headers)
        r = conn.getresponse()
        raw = r.read()
        dt = time.perf_counter() - t0
        if r.status != 200:
            raise SystemExit(f"{url}: {r.status} {raw[:300]!r}")
        if i >= warmup:
            times.append(dt * 1000)
        answer = json.loads(raw)
    return times, answer


def columns(answer: dict) -> dict:
    return dict(zip(answer["metadata"]["feature_names"], answer["results"]))


def summary(name: str, times: list) -> str:
    q = statistics.quantiles(times, n=100)
    return (
        f"| {name} | {statistics.mean(times):.2f} | {q[49]:.2f} | {q[89]:.2f} | {q[98]:.2f} | "
        f"{1000 / statistics.mean(times):.0f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--transformations", required=True)
    p.add_argument("--feast", required=True)
    p.add_argument("--quiver", required=True)
    a = p.parse_args()
    host, port = a.transformations.split(":")
    wait(host, int(port))
    for url in (a.feast, a.quiver):
        u = urlparse(url)
        wait(u.hostname, u.port)
    rows = []
    q_times, q_answer = run(a.quiver, BODY, a.requests)
    f_times, f_answer = run(a.feast, BODY, a.requests)
    assert columns(q_answer) == columns(f_answer), (q_answer, f_answer)
    base = {"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}}
    b_times, _ = run(a.quiver, base, a.requests)
    rows.append(summary("quiver-sidecar, driver_activity_v1 (transformation service)", q_times))
    rows.append(summary("feast serve, driver_activity_v1", f_times))
    rows.append(summary("quiver-sidecar, conv_rate only (no on-demand view; reference)", b_times))
    print(f"{a.requests} sequential requests each (after 30 warm-up), 1 entity, one connection")
    print("| server, request | mean ms | p50 ms | p90 ms | p99 ms | req/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
