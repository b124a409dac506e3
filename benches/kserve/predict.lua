-- wrk script: POST /v1/models/driver-ranker:predict with one random driver of BENCH_KEYS, as each
-- leg expects it (BENCH_LEG):
--   direct    {"instances": [[acc_rate, avg_daily_trips, conv_rate, driver_id]]} (features in hand)
--   proxy     the same as direct (through a bare proxy: the hop's own cost)
--   sample    {"instances": [[driver_id]]}         (KServe's Feast transformer sample)
--   enrich    {"instances": [{"driver_id": id}]}   (quiver serve --enrich)
-- Prints a RESULT line with rps and percentiles.
local leg = os.getenv("BENCH_LEG") or "direct"
local keys = tonumber(os.getenv("BENCH_KEYS") or "10000")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  local id = math.random(1, keys)
  local body
  if leg == "direct" or leg == "proxy" then
    -- The values load_data.py stored for this driver.
    body = string.format('{"instances":[[%s,%d,%s,%d]]}', (id % 50) / 64, id % 40, (id % 100) / 128, id)
  elseif leg == "sample" then
    body = '{"instances":[[' .. id .. ']]}'
  else
    body = '{"instances":[{"driver_id":' .. id .. '}]}'
  end
  return wrk.format(nil, "/v1/models/driver-ranker:predict", nil, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'RESULT {"rps": %.1f, "p50_us": %d, "p99_us": %d, "p999_us": %d, "errors": %d, "non_2xx": %d}\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), errors, summary.errors.status))
end
