-- wrk script: GET / paced to RATE requests per second in total over THREADS wrk threads
-- (RATE=0: flat out). Prints one RESULT line the run script parses.
--
-- Each thread keeps a schedule of send slots THREADS/RATE ms apart on the monotonic clock; a
-- connection whose response came back waits for the next free slot. The slots, not the
-- responses, set the pace, so a target with more latency is offered the same rate as long as
-- it keeps up (a fixed wait after each response would hold a slower target below the rate).
-- wrk's delay() counts whole milliseconds; the slots are exact, so its rounding averages out.
-- A thread more than 100 ms behind its schedule (the target cannot keep up) starts again from
-- now rather than sending a burst: the RESULT's rps then says how far below RATE it stayed.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } pace_timespec;
  int clock_gettime(int clock, pace_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("pace_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local rate = tonumber(os.getenv("RATE") or "0")
local threads = tonumber(os.getenv("THREADS") or "2")
local interval = 0
if rate > 0 then
  interval = 1000 * threads / rate
end
local due = nil

function delay()
  if rate <= 0 then
    return 0
  end
  local now = now_ms()
  if due == nil or due < now - 100 then
    due = now
  end
  due = due + interval
  local wait = due - now
  if wait < 0 then
    return 0
  end
  return wait
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errs = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
    summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(99) / 1000, errs))
end
