-- wrk script for the overload scenario (benchmarks/overload.py): POST one JSON body (the file
-- named by BENCH_BODY_FILE) with `X-Request-Timeout: BENCH_TIMEOUT` when set, and time every
-- request on the client: its send time (CLOCK_MONOTONIC, microseconds) goes out as its
-- X-Request-ID, which modelport echoes on every reply, refusals included, so each reply is
-- matched to its own send whatever the connection. Latencies are kept per status class; a reply
-- later than the timeout counts as late. done() prints one JSON line for overload.py.
--
-- With BENCH_HONOUR_RETRY_AFTER=1 a refused client waits Retry-After seconds before its next
-- request. wrk's delay() is not told which connection asks, so each 429 queues its pause and
-- the next connection about to send takes it: as many pauses of the same length as refusals,
-- which is the same load.
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } modelport_timespec;
int clock_gettime(int clk_id, modelport_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local clock = ffi.new("modelport_timespec")
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000000 + math.floor(tonumber(clock.tv_nsec) / 1000)
end

local body_file = assert(io.open(assert(os.getenv("BENCH_BODY_FILE")), "rb"))
local body = body_file:read("*a")
body_file:close()
local timeout = os.getenv("BENCH_TIMEOUT") or ""
local timeout_us = timeout ~= "" and tonumber(timeout) * 1000000 or 0
local headers = { ["Content-Type"] = "application/json" }
if timeout ~= "" then
  headers["X-Request-Timeout"] = timeout
end

-- Per thread (each wrk thread has its own Lua state; done() reads them through setup's list).
ok, refused, expired = {}, {}, {}
other_5xx, other, unmatched, late = 0, 0, 0, 0
local pauses, next_pause = {}, 1 -- milliseconds owed by refused clients, oldest first
local honour = os.getenv("BENCH_HONOUR_RETRY_AFTER") == "1"

if honour then
  function delay()
    local pause = pauses[next_pause]
    if pause == nil then
      return 0
    end
    pauses[next_pause] = nil
    next_pause = next_pause + 1
    return pause
  end
end

function request()
  headers["X-Request-ID"] = string.format("%d", now_us())
  return wrk.format("POST", nil, headers, body)
end

function response(status, reply_headers, _)
  local received = now_us()
  local sent = tonumber(reply_headers["x-request-id"] or reply_headers["X-Request-ID"] or "")
  if not sent then
    unmatched = unmatched + 1
    return
  end
  local latency = received - sent
  if timeout_us > 0 and latency > timeout_us then
    late = late + 1
  end
  if status == 200 then
    ok[#ok + 1] = latency
  elseif status == 429 then
    refused[#refused + 1] = latency
    if honour then
      local seconds = tonumber(reply_headers["retry-after"] or reply_headers["Retry-After"] or "")
      pauses[#pauses + 1] = (seconds or 1) * 1000
    end
  elseif status == 504 then
    expired[#expired + 1] = latency
  elseif status >= 500 then
    other_5xx = other_5xx + 1
  else
    other = other + 1
  end
end

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
end

local function merged(name)
  local all = {}
  for _, thread in ipairs(threads) do
    for _, value in ipairs(thread:get(name)) do
      all[#all + 1] = value
    end
  end
  table.sort(all)
  return all
end

local function summed(name)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get(name)
  end
  return total
end

-- Nearest-rank percentile of a sorted list, in microseconds (0 when empty).
local function percentile(sorted, p)
  if #sorted == 0 then
    return 0
  end
  return sorted[math.max(1, math.ceil(#sorted * p / 100))]
end

local function stats(name)
  local sorted = merged(name)
  return string.format('{"count": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}', #sorted,
    percentile(sorted, 50), percentile(sorted, 99), sorted[#sorted] or 0)
end

function done(summary, _, _)
  local errors = summary.errors
  io.write(string.format(
    'OVERLOAD_RESULT {"requests": %d, "duration_us": %d, "ok": %s, "refused": %s, '
      .. '"expired": %s, "other_5xx": %d, "other": %d, "unmatched": %d, "late": %d, '
      .. '"socket_errors": %d}\n',
    summary.requests, summary.duration, stats("ok"), stats("refused"), stats("expired"),
    summed("other_5xx"), summed("other"), summed("unmatched"), summed("late"),
    errors.connect + errors.read + errors.write + errors.timeout))
end
