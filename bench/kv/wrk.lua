-- wrk script for the region node: PUT or GET of 256-byte values over KEYS keys.
-- Requests are formatted once in init() and replayed, so the load generator spends its CPU on
-- sending, not on Lua string building (it shares the machine's cores with the server).
-- MODE=fill writes k1..kKEYS in order (each thread takes every THREADS-th key, wrapping), so a
-- later GET run finds every key.
-- Environment: MODE=fill|put|get, KEYS (default 100000), THREADS (default 2),
-- RATE (total req/s to pace to; 0 = flat out; see bench/lib/pace.lua, found through LUA_PATH).
local mode = os.getenv("MODE") or "put"
local keys = tonumber(os.getenv("KEYS") or "100000")
local threads = tonumber(os.getenv("THREADS") or "2")
local body = string.rep("v", 256)
local next_id = 0
local reqs = {}
local count = 0
local i = 0

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
  thread:set("id", next_id)
  next_id = next_id + 1
end

function init(args)
  math.randomseed(seed)
  local per_thread = math.floor(keys / threads)
  count = (mode == "fill") and per_thread or 20000
  for j = 1, count do
    local n
    if mode == "fill" then
      n = (j - 1) * threads + id + 1
    else
      n = math.random(1, keys)
    end
    local path = "/v1/kv/bench/k" .. n
    if mode == "get" then
      reqs[j] = wrk.format("GET", path)
    else
      reqs[j] = wrk.format("PUT", path, {["Content-Type"] = "application/octet-stream"}, body)
    end
  end
end

delay = require("pace")(tonumber(os.getenv("RATE") or "0"), threads)

function request()
  i = i % count + 1
  return reqs[i]
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d requests=%d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    errs, summary.requests))
end
