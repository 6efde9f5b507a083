-- wrk script: POST one chat completion per request on keep-alive connections, and
-- print the result as one JSON line ("BENCH {...}") that bench/load.py parses.
-- Arguments after `--`: the model name.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local model = args[1] or "bench-model"
  wrk.body = '{"model":"' .. model .. '","messages":['
    .. '{"role":"system","content":"You are terse."},'
    .. '{"role":"user","content":"Say hello in one word."}],"max_tokens":64}'
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
