"""Streaming probe for bench/run.sh.

  stream_probe.py serial URL N         N streams one after another, each on a new
                                       connection: time to first chunk and the gaps
                                       between chunks, as JSON (µs)
  stream_probe.py keepalive URL N      the same on one kept-alive connection, as SDK
                                       clients (httpx, aiohttp) do
  stream_probe.py concurrent URL N     N streams open at once; JSON with how many completed

Raw sockets and HTTP/1.1, so the client adds the same small cost to the direct
and the proxied runs.
"""
import asyncio
import json
import socket
import statistics
import sys
import time
from urllib.parse import urlparse

BODY = json.dumps({"model": "Qwen/Qwen3-8B", "stream": True,
                   "messages": [{"role": "user", "content": "Write a short poem about gateways and latency."}]},
                  separators=(",", ":"))


def request(host, path):
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer bench-client-key\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n{BODY}").encode()


def connect(url):
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def one_stream(url, s=None):
    """One streamed answer; on `s` if given (left open, read to the end of
    the chunked body so it can carry the next request), else on a new
    connection that is closed after [DONE]."""
    u = urlparse(url)
    keep = s is not None
    if s is None:
        s = connect(url)
    start = time.perf_counter()
    s.sendall(request(u.netloc, u.path))
    arrivals = []
    first = None
    buf = b""
    while True:
        data = s.recv(65536)
        if not data:
            break
        now = time.perf_counter()
        if first is None:
            first = now
        n = data.count(b"data: ")
        arrivals.extend([now] * n)
        buf += data
        if buf.endswith(b"\r\n0\r\n\r\n") or (not keep and b"[DONE]" in buf[-64:]):
            break
    if not keep:
        s.close()
    gaps = [(b - a) * 1e6 for a, b in zip(arrivals, arrivals[1:])]
    return (first - start) * 1e6, gaps, len(arrivals)


def serial(url, n, keepalive=False):
    ttfc, gaps, events = [], [], []
    s = connect(url) if keepalive else None
    if s is not None:
        one_stream(url, s)  # the connection's first request is not a keep-alive one
    for _ in range(n):
        t, g, e = one_stream(url, s)
        ttfc.append(t)
        gaps.extend(g)
        events.append(e)
    print(json.dumps({"ttfc_p50_us": statistics.median(ttfc), "gap_p50_us": statistics.median(gaps),
                      "gap_mean_us": statistics.fmean(gaps), "events_min": min(events), "streams": n}))


async def one_async(u, ok):
    try:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        writer.write(request(u.netloc, u.path))
        await writer.drain()
        buf = b""
        while True:
            data = await reader.read(65536)
            if not data:
                break
            buf += data
            if b"[DONE]" in buf[-64:]:
                ok.append(1)
                break
        writer.close()
    except OSError:
        pass


async def concurrent(url, n):
    u = urlparse(url)
    ok = []
    start = time.perf_counter()
    await asyncio.gather(*(one_async(u, ok) for _ in range(n)))
    print(json.dumps({"streams": n, "completed": len(ok), "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    mode, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "serial":
        serial(url, n)
    elif mode == "keepalive":
        serial(url, n, keepalive=True)
    else:
        asyncio.run(concurrent(url, n))
