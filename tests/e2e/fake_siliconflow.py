"""A small fake SiliconFlow for the SDK end-to-end check (stdlib only).

Answers /v1/user/info (balance as a string; or 410 for every key, as
api.siliconflow.cn has since August 2026, when FAKE_USER_INFO=gone),
/v1/chat/completions (plain and SSE with running usage in every chunk),
/v1/completions (fill-in-the-middle, plain and SSE), /v1/messages (plain and
the Anthropic event sequence) and /v1/models. Usage: python3 fake_siliconflow.py PORT
"""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEYS = {"sk-e2e-good-000000000000000001": ("acct-e2e", "12.34"),
        "sk-e2e-busy-000000000000000002": ("acct-busy", "5.00")}
# Keys whose account is rate-limited on chat calls (429, as SiliconFlow words it).
BUSY = {"sk-e2e-busy-000000000000000002"}


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

    def do_GET(self):
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
                {"id": "Qwen/Qwen3-8B", "object": "model", "created": 0, "owned_by": ""}]})
        self.send_json(404, "404 page not found")

    def do_POST(self):
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
        if self.path == "/v1/chat/completions" and self.key() in BUSY:
            return self.send_json(429, {"code": 50603, "message": "Request was rejected due to rate limiting. Details: TPM limit reached.", "data": None})
        if model == "no-such-model":
            return self.send_json(400, {"code": 20012, "message": "Model does not exist. Please check it carefully.", "data": None})
        if self.path == "/v1/chat/completions":
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
        if self.path == "/v1/messages":
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
