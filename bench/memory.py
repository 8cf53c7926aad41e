"""Peak memory of one proxy process under bodies a tenant may send (issue 30).

Usage: python3 bench/memory.py SCENARIO BASE_URL PID

SCENARIO:
  count_tokens  six 48 MB count_tokens bodies of zeros at once (refused, 413),
                then six 4 MB ones (counted, 200)
  chat          six streamed chat calls at once, each with a 40 MB system message
  responses     six streamed Responses calls at once, each with 40 MB of instructions

Prints one line: `SCENARIO peak_mb=N base_mb=N statuses=...` (VmHWM, the
process's peak resident set, and VmRSS before the first request), after
reading every answer to its end.
"""
import http.client
import json
import sys
import threading
from urllib.parse import urlparse

KEY = "bench-client-key"
MB = 1 << 20


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def call(host, port, path, body, out, i):
    c = http.client.HTTPConnection(host, port, timeout=300)
    try:
        c.request("POST", path, body, {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        r = c.getresponse()
        n = 0
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            n += len(chunk)
        out[i] = (r.status, n)
    except Exception as e:  # a refused upload may be cut: that is an answer too
        out[i] = (type(e).__name__, 0)
    finally:
        c.close()


def at_once(host, port, path, bodies):
    out = [None] * len(bodies)
    ts = [threading.Thread(target=call, args=(host, port, path, b, out, i)) for i, b in enumerate(bodies)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def main():
    scenario, base, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    u = urlparse(base)
    before = status_kb(pid, "VmRSS")
    if scenario == "count_tokens":
        big = b'{"model":"Qwen/Qwen3-8B","messages":[{"role":"user","content":[' + b"0," * (24 * MB) + b'0]}]}'
        fits = b'{"model":"Qwen/Qwen3-8B","messages":[{"role":"user","content":[' + b"0," * (2 * MB - 64) + b'0]}]}'
        res = at_once(u.hostname, u.port, "/v1/messages/count_tokens", [big] * 6)
        res += at_once(u.hostname, u.port, "/v1/messages/count_tokens", [fits] * 6)
    elif scenario == "chat":
        text = "x" * (40 * MB)
        body = json.dumps({"model": "Qwen/Qwen3-8B", "stream": True, "messages": [
            {"role": "system", "content": text}, {"role": "user", "content": "hi"}]}).encode()
        res = at_once(u.hostname, u.port, "/v1/chat/completions", [body] * 6)
    elif scenario == "responses":
        text = "x" * (40 * MB)
        body = json.dumps({"model": "Qwen/Qwen3-8B", "stream": True, "instructions": text, "input": "hi"}).encode()
        res = at_once(u.hostname, u.port, "/v1/responses", [body] * 6)
    else:
        sys.exit(f"unknown scenario {scenario}")
    peak = status_kb(pid, "VmHWM")
    statuses = ",".join(str(s) for s, _ in res)
    answered = sum(n for _, n in res)
    print(f"{scenario} peak_mb={peak // 1024} base_mb={before // 1024} answered_mb={answered // MB} statuses={statuses}")


if __name__ == "__main__":
    main()
