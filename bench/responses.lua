-- wrk script: the chat request of chat.lua said as a Responses API request
-- (what Codex sends to /v1/responses), same model, text and settings.
-- BENCH_STREAM=1 asks for a stream (both scripts).
dofile("bench/chat.lua")
wrk.body = '{"model":"Qwen/Qwen3-8B","instructions":"You are a concise assistant.","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"In two sentences, explain why an API gateway should add as little latency as possible to each request it forwards."}]}],"temperature":0.7,"max_output_tokens":256,"store":false,"stream":false}'
if os.getenv("BENCH_STREAM") == "1" then wrk.body = wrk.body:gsub('"stream":false', '"stream":true') end
