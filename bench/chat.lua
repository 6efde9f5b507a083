-- wrk script: POST one chat completion per request on keep-alive connections, and
-- print the result as one JSON line ("BENCH {...}") that bench/load.py parses.
-- Arguments after `--`: the model name, then optionally a request count. With a count,
-- the thread stops after that many responses and prints "BENCH-LIMIT"; bench/load.py
-- then sends SIGINT, which ends wrk's timer, so the duration is that of the N requests.
-- (A `response` function makes wrk parse every response's headers: a little more client CPU.)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local model = args[1] or "bench-model"
  wrk.body = '{"model":"' .. model .. '","messages":['
    .. '{"role":"system","content":"You are terse."},'
    .. '{"role":"user","content":"Say hello in one word."}],"max_tokens":64}'
  local limit = tonumber(args[2])
  if limit then
    local seen = 0
    response = function(status, headers, body)
      seen = seen + 1
      if seen == limit then
        io.write("BENCH-LIMIT\n")
        io.stdout:flush()
        wrk.thread:stop()
      end
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
