-- wrk script: GET / paced to RATE total requests per second over CONNS connections
-- (RATE=0: flat out). Prints one RESULT line the run script parses.
local rate = tonumber(os.getenv("RATE") or "0")
local conns = tonumber(os.getenv("CONNS") or "64")

function delay()
  if rate > 0 then
    return 1000 * conns / rate
  end
  return 0
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000, errs))
end
