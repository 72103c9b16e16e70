-- Pacing for wrk scripts: `require("pace")(rate, threads)` returns a delay() for a wrk script
-- that sends `rate` requests per second in total over `threads` wrk threads; for rate <= 0 it
-- returns nil, so the script has no delay() and wrk sends flat out without a timer per request.
-- Load it with LUA_PATH="<repository>/bench/lib/?.lua;;".
--
-- Each thread keeps a schedule of send slots threads/rate ms apart on the monotonic clock; a
-- connection whose response came back waits for the next free slot. The slots, not the
-- responses, set the pace, so a target with more latency is offered the same rate as long as
-- it keeps up (a fixed wait after each response would hold a slower target below the rate).
-- wrk's delay() counts whole milliseconds; the slots are exact, so its rounding averages out.
-- A thread more than 100 ms behind its schedule (the target cannot keep up) starts again from
-- now rather than sending a burst: the achieved rate then says how far below it stayed.
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

return function(rate, threads)
  if rate <= 0 then
    return nil
  end
  local interval = 1000 * threads / rate
  local due = nil
  return function()
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
end
