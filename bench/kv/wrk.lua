-- wrk script for the region node: PUT or GET of 256-byte values over KEYS keys.
-- Environment: MODE=put|get, KEYS (default 100000), RATE (total req/s to pace to; 0 = flat out),
-- CONNS (connections, to split RATE).
local mode = os.getenv("MODE") or "put"
local keys = tonumber(os.getenv("KEYS") or "100000")
local rate = tonumber(os.getenv("RATE") or "0")
local conns = tonumber(os.getenv("CONNS") or "64")
local body = string.rep("v", 256)
local counter = 0

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
end

function init(args)
  math.randomseed(seed)
end

function delay()
  if rate > 0 then
    return 1000 * conns / rate
  end
  return 0
end

function request()
  counter = counter + 1
  local path = "/v1/kv/bench/k" .. math.random(1, keys)
  if mode == "put" then
    return wrk.format("PUT", path, {["Content-Type"] = "application/octet-stream"}, body)
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d requests=%d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    errs, summary.requests))
end
