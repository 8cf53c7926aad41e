-- wrk script: the same realistic ~300-byte chat request, direct or through the proxy.
-- BENCH_STREAM=1 asks for a stream.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench-client-key"
wrk.body = '{"model":"Qwen/Qwen3-8B","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"In two sentences, explain why an API gateway should add as little latency as possible to each request it forwards."}],"temperature":0.7,"max_tokens":256,"stream":false}'
if os.getenv("BENCH_STREAM") == "1" then wrk.body = wrk.body:gsub('"stream":false', '"stream":true') end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"socket_errors":%d,"non2xx":%d,"p90_us":%d,"p95_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(90), latency:percentile(95), latency:percentile(99.9)))
end
