"""A small fake SiliconFlow for the end-to-end checks (stdlib only).

Answers /v1/user/info (balance as a string; or 410 for every key, as
api.siliconflow.cn has since August 2026, when FAKE_USER_INFO=gone),
/v1/chat/completions (plain and SSE with running usage in every chunk; an agent
loop with tool calls, see `chat`), /v1/completions (fill-in-the-middle, plain
and SSE), /v1/messages (plain and the Anthropic event sequence) and /v1/models
(the chat models it serves). Names outside CHAT_MODELS get SiliconFlow's 400
code 20012 on chat and messages; Qwen/tiny-window answers a prompt past 1,024 tokens with
SiliconFlow's overflow (400 code 20015, "length of prompt_tokens (N) must be less than
max_seq_len (1024).").

Test hooks, no auth: GET /__last_chat is the last chat request body as received;
GET /__chats lists every chat call answered with 200: {model, stream, kind
("text", "tool_call", "tool_result"), usage (the final numbers sent)};
GET /__messages the same for /v1/messages calls (an agent with a Bash tool
gets a tool_use streamed in argument pieces, then text quoting its result).
Usage: python3 fake_siliconflow.py PORT
"""
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEYS = {"sk-e2e-good-000000000000000001": ("acct-e2e", "12.34"),
        "sk-e2e-busy-000000000000000002": ("acct-busy", "5.00")}
# Keys whose account is rate-limited on chat calls (429, as SiliconFlow words it).
BUSY = {"sk-e2e-busy-000000000000000002"}

# The chat models served, listed by /v1/models. The thinking one streams
# reasoning_content and, like DeepSeek's, wants it back with its tool calls.
CHAT_MODELS = ["Qwen/Qwen3-8B", "deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-V3.2", "Qwen/tiny-window"]
# A model with a 1,024-token window: past it, SiliconFlow's 20015 overflow (about 4 bytes a token).
TINY_WINDOW = 1024
THINKING = {"deepseek-ai/DeepSeek-V3.2"}
# What the shell tool is asked to run: its effect on disk is the proof, its output the quote.
PROOF_CMD = "printf codex-was-here > proof.txt && echo wrote-proof"
SHELL_NAMES = ("exec_command", "shell", "run_shell_command", "bash")
REASONING = ["The user wants a proof file", " in the working directory.", " I’ll run one command — 思考完毕."]
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
CONTENT_PARTS = {"text", "image_url", "video_url", "audio_url"}

STATE = {"last_chat": None, "chats": [], "messages": []}
LOCK = threading.Lock()


def invalid(message):
    """SiliconFlow's validation error (400)."""
    return 400, {"code": 20015, "message": message, "data": None}


def check_messages(model, messages, tools):
    """What SiliconFlow (and DeepSeek behind it) refuses in an agent's history: None when fine."""
    for i, t in enumerate(tools or []):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(fn, dict):
            return invalid(f"tools.{i}.type: Input should be 'function'")
        if not isinstance(fn.get("name"), str) or not TOOL_NAME.match(fn["name"]):
            return invalid(f"tools.{i}.function.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
    pending = set()  # tool call ids not answered yet
    prev = None
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("system", "user", "assistant", "tool"):
            return invalid(f"messages.{i}.role: Input should be 'system', 'user', 'assistant' or 'tool'")
        content = m.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") not in CONTENT_PARTS:
                    return invalid(f"messages.{i}.content.{j}.type: Input should be 'text', 'image_url', 'video_url' or 'audio_url'")
        calls = m.get("tool_calls") if role == "assistant" else None
        if calls and prev is not None and prev.get("role") == "assistant" and prev.get("tool_calls"):
            return invalid(f"messages.{i}: consecutive assistant messages with tool_calls; "
                           "parallel tool calls belong in one assistant message")
        if role == "tool":
            if not isinstance(content, str):
                return invalid(f"messages.{i}.content: Input should be a valid string")
            if m.get("tool_call_id") not in pending:
                return invalid(f"messages.{i}.tool_call_id: no preceding assistant tool call has id {m.get('tool_call_id')!r}")
            pending.discard(m["tool_call_id"])
        elif pending:
            return invalid(f"messages.{i}: an assistant message with 'tool_calls' must be followed by tool messages "
                           f"responding to each 'tool_call_id' (missing: {sorted(pending)})")
        if calls:
            if model in THINKING and not (isinstance(m.get("reasoning_content"), str) and m["reasoning_content"]):
                return invalid(f"Missing `reasoning_content` field in the assistant message at message index {i}. "
                               "In thinking mode the reasoning_content of a tool-calling turn must be passed back.")
            for c in calls:
                fn = c.get("function") or {}
                if not c.get("id") or c.get("type") != "function" or not isinstance(fn.get("arguments"), str):
                    return invalid(f"messages.{i}.tool_calls: each needs id, type 'function' and string function.arguments")
                pending.add(c["id"])
        prev = m
    return None


def shell_tool(tools):
    """The tool an agent runs commands with: by name first, then by a cmd/command parameter."""
    fns = [t["function"] for t in tools or [] if t.get("type") == "function"]
    for fn in fns:
        if fn.get("name") in SHELL_NAMES:
            return fn
    for fn in fns:
        if {"cmd", "command"} & set(((fn.get("parameters") or {}).get("properties") or {})):
            return fn
    return None


def sample(schema):
    """A sensible value of a JSON schema's type."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {"string": "e2e", "integer": 1, "number": 1, "boolean": False, "array": [],
            "object": {}, "null": None}.get(kind, "e2e")


def shell_arguments(fn):
    """Arguments for the shell tool, built from its schema: the proof command, the rest filled in."""
    params = fn.get("parameters") or {}
    props = params.get("properties") or {}
    args = {}
    for name in params.get("required") or []:
        args[name] = sample(props.get(name) or {})
    for name in ("cmd", "command"):
        if name in props:
            kind = props[name].get("type")
            args[name] = ["bash", "-lc", PROOF_CMD] if kind == "array" or (isinstance(kind, list) and "array" in kind) else PROOF_CMD
            break
    else:
        args["cmd"] = PROOF_CMD
    return json.dumps(args)


def odd_pieces(text):
    """Cut a string at uneven places (as a model's deltas come)."""
    out, i, sizes = [], 0, [1, 7, 3, 12, 5, 2, 9]
    while i < len(text):
        n = sizes[len(out) % len(sizes)]
        out.append(text[i:i + n])
        i += n
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def key(self):
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else ""

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-siliconcloud-trace-id", "e2e-trace")
        self.end_headers()
        self.wfile.write(body)

    def send_sse(self, events):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for ev in events:
            data = ev.encode()
            # Odd split: two pieces per event.
            for piece in (data[: len(data) // 3], data[len(data) // 3 :]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            time.sleep(0.002)
        self.wfile.write(b"0\r\n\r\n")

    def send_odd_sse(self, events):
        """The whole stream cut at uneven byte offsets: pieces end inside events, inside
        `data:`, between the two newlines, inside a multi-byte character."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("x-siliconcloud-trace-id", "e2e-trace")
        self.end_headers()
        data = "".join(events).encode()
        i, k, sizes = 0, 0, [5, 61, 2, 113, 17, 1, 37, 240, 3]
        while i < len(data):
            piece = data[i : i + sizes[k % len(sizes)]]
            i, k = i + len(piece), k + 1
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.flush()
            if k % 3 == 0:
                time.sleep(0.002)
        self.wfile.write(b"0\r\n\r\n")

    def messages_agent(self, req, model):
        """Anthropic Messages with a Bash tool (Claude Code) and a task naming proof.txt: first a tool_use running the
        proof command, streamed as SiliconFlow streams it (input_json_delta pieces); once the
        result comes back, text quoting its last line. False for any other request."""
        tools = {t.get("name"): t for t in req.get("tools") or [] if isinstance(t, dict)}
        messages = req.get("messages") or []
        # Only a task about the proof file calls the tool; anything else gets plain text.
        if "Bash" not in tools or "proof.txt" not in json.dumps([m for m in messages if m.get("role") == "user"]):
            return False
        last = messages[-1] if messages else {}
        results = [b for b in (last.get("content") if isinstance(last.get("content"), list) else [])
                   if isinstance(b, dict) and b.get("type") == "tool_result"]
        # The tool_use this turn answers must be in the history, with the same id.
        asked = {b.get("id") for m in messages if m.get("role") == "assistant" and isinstance(m.get("content"), list)
                 for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_use"}
        if results and results[0].get("tool_use_id") not in asked:
            self.send_json(400, {"code": 20015, "message": "tool_result without its tool_use", "data": None})
            return True
        stream = bool(req.get("stream"))
        if results:
            content = results[0].get("content")
            text = content if isinstance(content, str) else "".join(
                b.get("text", "") for b in content or [] if isinstance(b, dict))
            lines = [l for l in text.strip().splitlines() if l.strip()]
            kind, blocks = "tool_result", [{"type": "text", "text": f"All done: {lines[-1] if lines else ''}"}]
            usage, stop = {"input_tokens": 900, "output_tokens": 7}, "end_turn"
        else:
            command = {"command": PROOF_CMD.replace("codex-was-here", "claude-was-here"),
                       "description": "Write the proof file"}
            kind, blocks = "tool_call", [{"type": "text", "text": "I'll write the file."},
                                         {"type": "tool_use", "id": "toolu_e2e_01", "name": "Bash", "input": command}]
            usage, stop = {"input_tokens": 800, "output_tokens": 30}, "tool_use"
        with LOCK:
            STATE["messages"].append({"model": model, "stream": stream, "kind": kind, "tools": len(tools),
                                      "usage": usage})
        if not stream:
            self.send_json(200, {"id": "msg_e2e", "type": "message", "role": "assistant", "content": blocks,
                                 "model": model, "stop_reason": stop, "stop_sequence": None, "usage": usage})
            return True
        seq = [("message_start", {"type": "message_start", "message": {"id": "msg_e2e", "type": "message",
                "role": "assistant", "content": [], "model": model, "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}})]
        for i, b in enumerate(blocks):
            if b["type"] == "text":
                seq.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                     "content_block": {"type": "text", "text": ""}}))
                for piece in odd_pieces(b["text"]):
                    seq.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                        "delta": {"type": "text_delta", "text": piece}}))
            else:
                seq.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                    "type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}))
                for piece in odd_pieces(json.dumps(b["input"])):
                    seq.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                        "delta": {"type": "input_json_delta", "partial_json": piece}}))
            seq.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        seq.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": usage["output_tokens"]}}))
        seq.append(("message_stop", {"type": "message_stop"}))
        self.send_odd_sse([f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in seq])
        return True

    def chat(self, req, model):
        """The agent loop as SiliconFlow runs it: with a shell tool offered and no tool
        result yet, a call to that tool; with a tool result, a final text quoting it."""
        messages = req.get("messages") or []
        tools = req.get("tools") or []
        refused = check_messages(model, messages, tools)
        if refused:
            self.send_json(*refused)
            return True
        results = [m for m in messages if m.get("role") == "tool"]
        fn = shell_tool(tools) if not results and req.get("tool_choice") != "none" else None
        if not results and fn is None:
            return False  # the plain answer
        thinking = model in THINKING
        reasoning = REASONING if thinking else []
        # Prompt tokens vary with the request, so a test can tell the calls apart.
        prompt = max(1, len(json.dumps(messages) + json.dumps(tools)) // 16)
        if results:
            lines = [line for line in results[-1]["content"].splitlines() if line.strip()]
            text = "All done: " + (lines[-1].strip() if lines else "(no output)")
            deltas = [{"reasoning_content": r, "content": None} for r in reasoning[:1]]
            deltas += [{"content": p} for p in odd_pieces(text)]
            final = {"role": "assistant", "content": text}
            if thinking:
                final["reasoning_content"] = reasoning[0]
            finish, kind = "stop", "tool_result"
        else:
            args = shell_arguments(fn)
            call_id = "call_fake_%d" % (len(STATE["chats"]) + 1)
            deltas = [{"reasoning_content": r, "content": None} for r in reasoning]
            deltas.append({"content": None, "tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                                            "function": {"name": fn["name"], "arguments": ""}}]})
            deltas += [{"content": None, "tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in odd_pieces(args)]
            final = {"role": "assistant", "content": None,
                     "tool_calls": [{"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": args}}]}
            if thinking:
                final["reasoning_content"] = "".join(reasoning)
            finish, kind = "tool_calls", "tool_call"
        n_reasoning = sum(1 for d in deltas if d.get("reasoning_content"))

        def usage(done):
            return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done,
                    "completion_tokens_details": {"reasoning_tokens": min(done, n_reasoning)}}

        last = usage(len(deltas) + 1)
        with LOCK:
            STATE["chats"].append({"model": model, "stream": bool(req.get("stream")), "kind": kind, "usage": last})
        if not req.get("stream"):
            self.send_json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": model,
                                 "choices": [{"index": 0, "message": final, "finish_reason": finish}],
                                 "usage": last, "system_fingerprint": ""})
            return True
        events = []
        for i, delta in enumerate(deltas + [{}]):
            if i == 0:
                delta = dict(delta, role="assistant")
            done = i == len(deltas)
            events.append("data: " + json.dumps({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish if done else None}],
                "system_fingerprint": "", "usage": usage(i + 1)}, ensure_ascii=False) + "\n\n")
        events.append("data: [DONE]\n\n")
        self.send_odd_sse(events)
        return True

    def do_GET(self):
        if self.path == "/__last_chat":
            with LOCK:
                return self.send_json(200, STATE["last_chat"])
        if self.path == "/__chats":
            with LOCK:
                return self.send_json(200, STATE["chats"])
        if self.path == "/__messages":
            with LOCK:
                return self.send_json(200, STATE["messages"])
        if self.key() not in KEYS:
            return self.send_json(401, "Invalid token")
        if self.path.startswith("/v1/user/info"):
            if os.environ.get("FAKE_USER_INFO") == "gone":
                return self.send_json(410, {"code": 20410, "message": "This API has been deprecated", "data": None})
            acct, bal = KEYS[self.key()]
            return self.send_json(200, {"code": 20000, "message": "OK", "status": True, "data": {
                "id": acct, "name": "e2e", "balance": "0", "chargeBalance": bal, "totalBalance": bal}})
        if self.path.startswith("/v1/models"):
            return self.send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": ""} for m in CHAT_MODELS]})
        self.send_json(404, "404 page not found")

    def do_POST(self):
        # Routed by path alone: Claude Code posts to /v1/messages?beta=true.
        self.path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.key() not in KEYS:
            return self.send_json(401, "Invalid token")
        if self.path == "/v1/audio/transcriptions":
            ok = b'name="model"' in raw and b'name="file"' in raw
            return self.send_json(200 if ok else 400, {"text": f"heard {len(raw)} bytes"})
        req = json.loads(raw or b"{}")
        if self.path == "/v1/audio/speech":
            audio = bytes(range(256)) * 64
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(audio), 4096):
                piece = audio[i : i + 4096]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        model = req.get("model", "")
        if self.path == "/v1/chat/completions":
            with LOCK:
                STATE["last_chat"] = req
        if self.path == "/v1/chat/completions" and self.key() in BUSY:
            return self.send_json(429, {"code": 50603, "message": "Request was rejected due to rate limiting. Details: TPM limit reached.", "data": None})
        if model == "no-such-model":
            return self.send_json(400, {"code": 20012, "message": "Model does not exist. Please check it carefully.", "data": None})
        if self.path in ("/v1/chat/completions", "/v1/messages") and model not in CHAT_MODELS:
            return self.send_json(400, {"code": 20012, "message": "Model does not exist. Please check it carefully.", "data": None})
        if model == "Qwen/tiny-window" and len(raw) // 4 > TINY_WINDOW:
            return self.send_json(400, {"code": 20015, "message": f"length of prompt_tokens ({len(raw) // 4}) must be less than max_seq_len ({TINY_WINDOW}).", "data": None})
        if self.path == "/v1/chat/completions":
            if self.chat(req, model):
                return
            with LOCK:
                STATE["chats"].append({"model": model, "stream": bool(req.get("stream")), "kind": "text",
                                       "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
                                       if req.get("stream") else
                                       {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})
            if req.get("stream"):
                events = []
                for i, word in enumerate(["Hello", " from", " the", " fake", ""]):
                    done = word == ""
                    events.append("data: " + json.dumps({
                        "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model,
                        "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": "stop" if done else None}],
                        "usage": {"prompt_tokens": 9, "completion_tokens": i + 1, "total_tokens": 10 + i}}) + "\n\n")
                events.append("data: [DONE]\n\n")
                return self.send_sse(events)
            return self.send_json(200, {"id": "c1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the fake"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}})
        if self.path == "/v1/completions":
            pieces = ["    return", " a", " +", " b", ""]
            if req.get("stream"):
                events = []
                for i, text in enumerate(pieces):
                    events.append("data: " + json.dumps({
                        "id": "f1", "object": "text_completion", "created": 1, "model": model,
                        "choices": [{"index": 0, "text": text, "finish_reason": "stop" if text == "" else None}],
                        "usage": {"prompt_tokens": 12, "completion_tokens": i + 1, "total_tokens": 13 + i}}) + "\n\n")
                events.append("data: [DONE]\n\n")
                return self.send_sse(events)
            assert "suffix" in req, req
            return self.send_json(200, {"id": "f1", "object": "text_completion", "created": 1, "model": model,
                "choices": [{"index": 0, "text": "".join(pieces), "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}})
        if self.path == "/v1/messages" and self.messages_agent(req, model):
            return
        if self.path == "/v1/messages":
            with LOCK:
                STATE["messages"].append({"model": model, "stream": bool(req.get("stream")), "kind": "text",
                                          "tools": len(req.get("tools") or []),
                                          "usage": {"input_tokens": 15, "output_tokens": 6}})
            if req.get("stream"):
                seq = [
                    ("message_start", {"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant",
                        "content": [], "model": model, "stop_reason": None, "stop_sequence": None,
                        "usage": {"input_tokens": 15, "output_tokens": 1}}}),
                    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi there"}}),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {"output_tokens": 6}}),
                    ("message_stop", {"type": "message_stop"}),
                ]
                return self.send_sse([f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in seq])
            return self.send_json(200, {"id": "m1", "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": "Hi there"}], "model": model, "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 15, "output_tokens": 6}})
        self.send_json(404, "404 page not found")


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
