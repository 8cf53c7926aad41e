"""End-to-end: the proxy binary, a fake SiliconFlow, and the official openai and
anthropic SDKs, as a user runs them. Usage: python3 sdk_e2e.py PATH_TO_BINARY
Prints 'N passed, M failed' and exits non-zero on any failure.
"""
import json
import re
import sys
import time
import urllib.request

import anthropic
import openai

from harness import CLIENT, GOOD, Checks, Stack


def main():
    stack = Stack(sys.argv[1])
    base = stack.base
    checks = Checks()
    try:
        imported = stack.admin("POST", "/import_keys", {"keys": GOOD + "\nsk-e2e-unknown-00000000000"})
        assert imported["added"] == 1 and imported["invalid"] == 1, imported
        oai = openai.OpenAI(base_url=base + "/v1", api_key=CLIENT, max_retries=0)
        ant = anthropic.Anthropic(base_url=base, api_key=CLIENT, max_retries=0)

        def openai_plain():
            r = oai.chat.completions.create(model="Qwen/Qwen3-8B", messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content == "Hello from the fake", r
            assert r.usage.total_tokens == 13

        def openai_stream():
            text = "".join((c.choices[0].delta.content or "") for c in oai.chat.completions.create(
                model="Qwen/Qwen3-8B", stream=True, messages=[{"role": "user", "content": "hi"}]) if c.choices)
            assert text == "Hello from the fake", text

        def openai_models():
            models = list(oai.models.list())
            ids = [m.id for m in models]
            assert ids == ["Qwen/Qwen3-8B", "deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-V3.2", "Qwen/tiny-window"], ids
            # The catalog's window, under OpenRouter's names.
            v32 = [m for m in models if m.id == "deepseek-ai/DeepSeek-V3.2"][0]
            assert (v32.model_extra or {}).get("context_length", 0) > 0, v32

        def openai_wrong_key():
            bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
            try:
                bad.models.list()
            except openai.AuthenticationError as e:
                assert e.status_code == 401
                return
            raise AssertionError("no 401")

        def openai_bad_request():
            try:
                oai.chat.completions.create(model="", messages=[])
            except openai.BadRequestError as e:
                assert "model" in str(e)
                return
            raise AssertionError("no 400")

        def openai_fim():
            r = oai.completions.create(model="Qwen/Qwen2.5-Coder-7B-Instruct", prompt="def add(a, b):\n",
                                       suffix="\nprint(add(1, 2))", max_tokens=16)
            assert r.choices[0].text == "    return a + b", r
            assert r.usage.total_tokens == 16, r.usage

        def openai_fim_stream():
            text = "".join(c.choices[0].text for c in oai.completions.create(
                model="Qwen/Qwen2.5-Coder-7B-Instruct", prompt="def add(a, b):\n", suffix="\n", stream=True)
                if c.choices)
            assert text == "    return a + b", text

        def pooled_balance_unknown():
            info = oai.get("/user/info", cast_to=object)
            assert info["data"]["totalBalance"] is None, info
            assert info["data"]["balanceUnknownAccounts"] == 1, info

        def anthropic_plain():
            m = ant.messages.create(model="deepseek-ai/DeepSeek-V3", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
            assert m.content[0].text == "Hi there" and m.usage.output_tokens == 6, m

        def anthropic_stream():
            with ant.messages.stream(model="deepseek-ai/DeepSeek-V3", max_tokens=64,
                                     messages=[{"role": "user", "content": "hi"}]) as s:
                text = "".join(s.text_stream)
                final = s.get_final_message()
            assert text == "Hi there" and final.usage.output_tokens == 6, (text, final.usage)

        def openai_speech():
            audio = oai.audio.speech.create(model="FunAudioLLM/CosyVoice2-0.5B", voice="FunAudioLLM/CosyVoice2-0.5B:alex",
                                            input="hello").read()
            assert audio == bytes(range(256)) * 64, len(audio)

        def openai_transcription():
            t = oai.audio.transcriptions.create(model="FunAudioLLM/SenseVoiceSmall", file=("a.wav", b"RIFF" + bytes(5000)))
            assert t.text.startswith("heard ") and int(t.text.split()[1]) > 5000, t.text

        def logs_match():
            deadline = time.time() + 10
            while True:
                logs = stack.admin("GET", "/logs?page_size=100")
                # (A call that ran past a quarter of LOG_FLUSH_MS is written in flight first.)
                ended = not any(r["in_flight"] for r in logs["logs"])
                if (logs["total"] >= 11 and ended) or time.time() > deadline:
                    break
                time.sleep(0.1)
            rows = logs["logs"]
            # 10 calls and the pooled user info; the 401 never reached the pool: not a proxied call.
            assert logs["total"] == 11, logs["total"]
            by = {(r["endpoint"], r["stream"], r["status"]): r for r in rows}
            assert by[("/v1/chat/completions", False, 200)]["total_tokens"] == 13
            assert by[("/v1/chat/completions", True, 200)]["total_tokens"] == 14, "last running total"
            assert by[("/v1/messages", True, 200)]["input_tokens"] == 15
            assert by[("/v1/messages", True, 200)]["output_tokens"] == 6
            assert by[("/v1/completions", False, 200)]["total_tokens"] == 16
            assert by[("/v1/completions", True, 200)]["total_tokens"] == 17, "last running total"
            assert all(GOOD not in json.dumps(r) for r in rows), "no full key in logs"

        # The Responses API (translated to chat by the proxy). The fake's thinking model
        # answers a shell tool with a call, and a tool result with "All done: <its last line>".
        thinking = "deepseek-ai/DeepSeek-V3.2"
        shell = {"type": "function", "name": "exec_command", "description": "Run a shell command.",
                 "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}}

        def responses_plain():
            r = oai.responses.create(model="Qwen/Qwen3-8B", input="hi")
            assert r.status == "completed", r
            assert r.output_text == "Hello from the fake", r
            assert r.usage.input_tokens == 9 and r.usage.output_tokens == 4, r.usage
            assert r.model == "Qwen/Qwen3-8B", r.model
            assert r.id.startswith("resp_"), r.id

        def responses_stream():
            events = list(oai.responses.create(model="Qwen/Qwen3-8B", input="hi", stream=True))
            types = [e.type for e in events]
            want = ["response.created", "response.in_progress", "response.output_item.added",
                    "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                    "response.content_part.done", "response.output_item.done", "response.completed"]
            it = iter(types)
            assert all(w in it for w in want), types  # in this order, others may come between
            assert types[0] == "response.created" and types[-1] == "response.completed", types
            seq = [e.sequence_number for e in events]
            assert seq[0] == 0 and all(b > a for a, b in zip(seq, seq[1:])), seq
            text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
            final = events[-1].response
            assert text == "Hello from the fake" == final.output_text, (text, final)
            assert final.status == "completed" and final.model == "Qwen/Qwen3-8B", final
            assert final.usage.input_tokens == 9, final.usage

        def check_first(first):
            kinds = [o.type for o in first.output]
            assert "function_call" in kinds and "reasoning" in kinds, kinds
            assert kinds.index("reasoning") < kinds.index("function_call"), kinds
            call = first.output[kinds.index("function_call")]
            assert call.name == "exec_command" and call.call_id, call
            args = json.loads(call.arguments)
            assert isinstance(args.get("cmd"), str) and args["cmd"], args
            return call

        def follow_up(first, call):
            return [{"role": "user", "content": "make the proof file"}, *[o.model_dump() for o in first.output],
                    {"type": "function_call_output", "call_id": call.call_id, "output": "wrote-proof"}]

        def responses_tool_round_trip():
            first = oai.responses.create(model=thinking, input="make the proof file", tools=[shell])
            call = check_first(first)
            assert first.model == thinking, first.model
            sent = stack.fake_get("/__last_chat")
            assert [t["function"]["name"] for t in sent["tools"]] == ["exec_command"], sent["tools"]
            second = oai.responses.create(model=thinking, tools=[shell], input=follow_up(first, call))
            assert "wrote-proof" in second.output_text, second
            sent = stack.fake_get("/__last_chat")
            roles = [m["role"] for m in sent["messages"]]
            assert roles[-2:] == ["assistant", "tool"], roles
            assert sent["messages"][-2]["tool_calls"][0]["id"] == call.call_id, sent["messages"][-2]
            assert sent["messages"][-2].get("reasoning_content"), "reasoning sent back"

        def responses_tool_round_trip_stream():
            events = list(oai.responses.create(model=thinking, input="make the proof file", tools=[shell], stream=True))
            first = events[-1].response
            assert events[-1].type == "response.completed", events[-1]
            call = check_first(first)
            args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
            assert args == call.arguments, (args, call.arguments)
            done = [e for e in events if e.type == "response.output_item.done"]
            assert [e.item.type for e in done] == [o.type for o in first.output], done
            events = list(oai.responses.create(model=thinking, tools=[shell], input=follow_up(first, call), stream=True))
            assert events[-1].type == "response.completed", events[-1]
            final = events[-1].response
            assert "wrote-proof" in final.output_text, final
            assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0, final.usage

        def responses_previous_id():
            try:
                oai.responses.create(model="Qwen/Qwen3-8B", input="hi", previous_response_id="resp_x")
            except openai.BadRequestError as e:
                assert "previous_response_id" in str(e), e
                return
            raise AssertionError("no 400")

        def responses_unknown_model():
            try:
                oai.responses.create(model="gpt-5", input="hi")
            except openai.BadRequestError as e:
                assert e.status_code == 400, e
                err = e.response.json().get("error")  # OpenAI's error shape, the upstream's words
                assert isinstance(err, dict) and "Model does not exist" in err.get("message", ""), e.response.text
                return
            raise AssertionError("no 400")

        def client_keys():
            made = stack.admin("POST", "/api/clients", {"name": "sdk-team", "models": ["Qwen/*"], "rpm": 3})
            key = made["key"]
            c_oai = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
            c_ant = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
            r = c_oai.chat.completions.create(model="Qwen/Qwen3-8B", messages=[{"role": "user", "content": "hi"}])
            assert r.choices[0].message.content == "Hello from the fake", r
            assert [m.id for m in c_oai.models.list()] == ["Qwen/Qwen3-8B", "Qwen/tiny-window"]
            try:
                c_oai.chat.completions.create(model="deepseek-ai/DeepSeek-V3", messages=[{"role": "user", "content": "hi"}])
                raise AssertionError("no 403")
            except openai.PermissionDeniedError as e:
                assert e.status_code == 403 and "Qwen/*" in str(e), e
            try:
                c_ant.messages.create(model="claude-3-5-sonnet", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
                raise AssertionError("no 403")
            except anthropic.PermissionDeniedError as e:
                assert e.status_code == 403, e
            m = c_ant.messages.create(model="Qwen/Qwen3-8B", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
            assert m.content[0].text, m
            # rpm 3: the chat, the model list and the message went through; the fourth waits.
            try:
                c_oai.chat.completions.create(model="Qwen/Qwen3-8B", messages=[{"role": "user", "content": "hi"}])
                raise AssertionError("no 429")
            except openai.RateLimitError as e:
                assert e.status_code == 429 and "rpm" in str(e), e
                assert int(e.response.headers["retry-after"]) >= 1
            listed = [c for c in stack.admin("GET", "/api/clients")["clients"] if c["name"] == "sdk-team"][0]
            assert key not in json.dumps(listed), "masked"
            assert listed["requests_today"] == 3, listed
            deadline = time.time() + 10
            while stack.admin("GET", "/logs?client=sdk-team")["total"] < 3 and time.time() < deadline:
                time.sleep(0.1)
            rows = stack.admin("GET", "/logs?client=sdk-team")["logs"]
            assert len(rows) == 3, rows
            assert sum(r["total_tokens"] for r in rows) == listed["tokens_today"], (rows, listed)
            rotated = stack.admin("POST", f"/api/clients/{made['id']}/rotate")["key"]
            try:
                c_oai.models.list()
                raise AssertionError("the old key still works")
            except openai.AuthenticationError as e:
                assert e.status_code == 401
            stack.admin("DELETE", f"/api/clients/{made['id']}")
            try:
                openai.OpenAI(base_url=base + "/v1", api_key=rotated, max_retries=0).models.list()
                raise AssertionError("a deleted client's key still works")
            except openai.AuthenticationError:
                pass

        def client_limits():
            made = stack.admin("POST", "/api/clients", {"name": "sdk-quota", "daily_requests": 2})
            c_oai = openai.OpenAI(base_url=base + "/v1", api_key=made["key"], max_retries=0)
            c_ant = anthropic.Anthropic(base_url=base, api_key=made["key"], max_retries=0)
            c_oai.chat.completions.create(model="Qwen/Qwen3-8B", messages=[{"role": "user", "content": "hi"}])
            c_ant.messages.create(model="Qwen/Qwen3-8B", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
            try:
                c_ant.messages.create(model="Qwen/Qwen3-8B", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
                raise AssertionError("no 429")
            except anthropic.RateLimitError as e:
                assert e.status_code == 429 and "daily_requests" in str(e), e
                assert int(e.response.headers["retry-after"]) >= 1
            # A token budget: the call that crosses it is let in, the next is not.
            stack.admin("PATCH", f"/api/clients/{made['id']}", {"daily_requests": None, "daily_tokens": 1})
            try:
                c_oai.chat.completions.create(model="Qwen/Qwen3-8B", messages=[{"role": "user", "content": "hi"}])
                raise AssertionError("no 429")
            except openai.RateLimitError as e:
                assert "daily_tokens" in str(e), e
            # Disabled, then expired: 401 in each dialect.
            stack.admin("PATCH", f"/api/clients/{made['id']}", {"daily_tokens": None, "enabled": False})
            try:
                c_ant.messages.create(model="Qwen/Qwen3-8B", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
                raise AssertionError("a disabled key works")
            except anthropic.AuthenticationError as e:
                assert e.status_code == 401, e
            stack.admin("PATCH", f"/api/clients/{made['id']}",
                        {"enabled": True, "expires_at": "2020-01-01T00:00:00Z"})
            try:
                c_oai.models.list()
                raise AssertionError("an expired key works")
            except openai.AuthenticationError as e:
                assert e.status_code == 401, e
            stack.admin("PATCH", f"/api/clients/{made['id']}", {"expires_at": None})
            assert c_oai.models.list().data, "back once the expiry is lifted"

        def metrics_match_log():
            # The log's rows are the calls answered: /metrics counts the same
            # (once the log writer has taken them in).
            deadline = time.time() + 10
            while True:
                logged = stack.admin("GET", "/logs?page_size=1")["total"]
                with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
                    text = r.read().decode()
                served = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                             if line.startswith("siliconflow_proxy_requests_total{"))
                if served == logged or time.time() > deadline:
                    break
                time.sleep(0.1)
            assert served == logged and logged > 10, (served, logged)
            assert GOOD not in text and CLIENT not in text, "no secret in /metrics"
            refused = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("siliconflow_proxy_refusals_total{")}
            # The wrong keys, rotated and deleted keys; the two models off the
            # list; rpm, daily_requests and daily_tokens.
            assert refused["unauthorized"] >= 4 and refused["model_not_allowed"] == 2, refused
            assert refused["limit"] == 3, refused

        # Model aliases (set last: the checks above expect SiliconFlow's own names only).
        def aliases_in_answers():
            stack.admin("PUT", "/api/aliases", {"aliases": [
                {"pattern": "claude-*", "model": "deepseek-ai/DeepSeek-V3"}, {"pattern": "gpt-4o*", "model": "Qwen/Qwen3-8B"}]})
            r = oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
            assert r.model == "gpt-4o" and r.choices[0].message.content == "Hello from the fake", r
            chunks = list(oai.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                      messages=[{"role": "user", "content": "hi"}]))
            assert chunks and all(c.model == "gpt-4o-mini" for c in chunks), [c.model for c in chunks]
            assert stack.fake_get("/__last_chat")["model"] == "Qwen/Qwen3-8B"
            m = ant.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}])
            assert m.model == "claude-sonnet-4-5" and m.content[0].text == "Hi there", m
            with ant.messages.stream(model="claude-opus-4-8", max_tokens=64,
                                     messages=[{"role": "user", "content": "hi"}]) as st:
                text = "".join(st.text_stream)
                final = st.get_final_message()
            assert final.model == "claude-opus-4-8" and text == "Hi there", final
            resp = oai.responses.create(model="gpt-4o", input="hi")
            assert resp.model == "gpt-4o" and resp.output_text == "Hello from the fake", resp
            ids = [x.id for x in oai.models.list()]
            assert "claude-*" in ids and "gpt-4o*" in ids, ids

        def anthropic_count_tokens():
            n = ant.messages.count_tokens(model="claude-opus-4-8", system="You are terse.",
                                          messages=[{"role": "user", "content": "Count these words, please."}])
            assert 10 <= n.input_tokens <= 40, n
            logged = stack.admin("GET", "/logs?endpoint=/v1/messages&page_size=100")["logs"]
            assert all("count_tokens" not in r["endpoint"] for r in logged), "no log row for a count"

        def overflow_in_each_sdk():
            # SiliconFlow's 20015 overflow, as each SDK's users read it.
            long = "word " * 2000
            for call in (lambda: oai.chat.completions.create(model="Qwen/tiny-window", messages=[{"role": "user", "content": long}]),
                         lambda: oai.responses.create(model="Qwen/tiny-window", input=long)):
                try:
                    call()
                except openai.BadRequestError as e:
                    assert e.code == "context_length_exceeded", e.body
                    continue
                raise AssertionError("no 400")
            try:
                ant.messages.create(model="Qwen/tiny-window", max_tokens=64, messages=[{"role": "user", "content": long}])
            except anthropic.BadRequestError as e:
                message = e.body["error"]["message"]
                # Claude Code's own pattern for it.
                assert re.search(r"prompt is too long[^0-9]*(\d+)\s*tokens?\s*>\s*(\d+)", message), message
                return
            raise AssertionError("no 400")

        for name, fn in [("openai chat", openai_plain), ("openai stream", openai_stream), ("openai models", openai_models),
                         ("openai wrong key -> 401", openai_wrong_key), ("openai missing model -> 400", openai_bad_request),
                         ("anthropic messages", anthropic_plain), ("anthropic stream", anthropic_stream),
                         ("openai speech (binary)", openai_speech), ("openai transcription (multipart)", openai_transcription),
                         ("openai FIM completion", openai_fim), ("openai FIM stream", openai_fim_stream),
                         ("pooled user info: balance unknown, not 0", pooled_balance_unknown),
                         ("request log matches", logs_match),
                         ("openai responses", responses_plain), ("openai responses stream", responses_stream),
                         ("openai responses: function tool round trip (thinking model)", responses_tool_round_trip),
                         ("openai responses stream: function tool round trip", responses_tool_round_trip_stream),
                         ("openai responses: previous_response_id -> 400", responses_previous_id),
                         ("openai responses: unknown model -> upstream's 400", responses_unknown_model),
                         ("client keys: models, rpm, usage, rotate, delete (openai + anthropic SDKs)", client_keys),
                         ("client keys: daily limits, disabled, expired (openai + anthropic SDKs)", client_limits),
                         ("/metrics counts what the log holds", metrics_match_log),
                         ("aliases: the SDKs see the model they asked for, plain and streamed", aliases_in_answers),
                         ("anthropic count_tokens: answered by the proxy", anthropic_count_tokens),
                         ("overflow: openai raises context_length_exceeded, anthropic 'prompt is too long'", overflow_in_each_sdk)]:
            checks.run(name, fn)
    finally:
        stack.stop()
    checks.finish()


if __name__ == "__main__":
    main()
