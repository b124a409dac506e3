-- wrk script: POST /get-online-features with BENCH_ENTITIES random drivers (of BENCH_KEYS) and the
-- first BENCH_FEATURES features of view `bench`; prints a RESULT line with rps and percentiles.
local n = tonumber(os.getenv("BENCH_ENTITIES") or "1")
local f = tonumber(os.getenv("BENCH_FEATURES") or "3")
local keys = tonumber(os.getenv("BENCH_KEYS") or "10000")
local refs = {}
for i = 0, f - 1 do refs[#refs + 1] = '"bench:f' .. i .. '"' end
local features = table.concat(refs, ",")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
if os.getenv("BENCH_ACCEPT") then wrk.headers["Accept"] = os.getenv("BENCH_ACCEPT") end

request = function()
  local ids = {}
  for i = 1, n do ids[i] = tostring(math.random(1, keys)) end
  local body = '{"features":[' .. features .. '],"entities":{"driver_id":[' .. table.concat(ids, ",") .. ']}}'
  return wrk.format(nil, "/get-online-features", nil, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    'RESULT {"rps": %.1f, "p50_us": %d, "p99_us": %d, "p999_us": %d, "errors": %d, "non_2xx": %d}\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), errors, summary.errors.status))
end
