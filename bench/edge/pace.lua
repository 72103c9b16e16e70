-- wrk script: GET / paced to RATE requests per second in total over THREADS wrk threads
-- (RATE=0: flat out; see bench/lib/pace.lua, found through LUA_PATH). Prints one RESULT line
-- the run script parses.
delay = require("pace")(tonumber(os.getenv("RATE") or "0"), tonumber(os.getenv("THREADS") or "2"))

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000, errs))
end
