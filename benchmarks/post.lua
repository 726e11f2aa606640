-- wrk script: POST one JSON body (the file named by BENCH_BODY_FILE, plus the Cookie header in
-- BENCH_COOKIE if set) on every request, and print wrk's summary as one JSON line for
-- benchmarks/load.py. wrk exits 0 whatever the servers answer, so the harness reads errors here:
-- errors.status counts responses >= 400 (the servers under test send no 1xx or 3xx; a
-- response() callback would see every status but slows wrk down), the rest are socket errors.
local body_file = assert(io.open(assert(os.getenv("BENCH_BODY_FILE")), "rb"))
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
wrk.headers["Content-Type"] = "application/json"
local cookie = os.getenv("BENCH_COOKIE")
if cookie and cookie ~= "" then
  wrk.headers["Cookie"] = cookie
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
      .. '"latency_p50_us": %d, "latency_p90_us": %d, "latency_p99_us": %d, '
      .. '"latency_mean_us": %.1f, "latency_max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, errors.status,
    errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
