"""What anonymous callers can make the proxy hold: RSS before, during and after.

Usage: python3 bench/anon_memory.py BASE_URL PID [CONNECTIONS] [MB_PER_CONNECTION]

Opens CONNECTIONS sockets (default 48), each declaring a 45 MB body to /login,
an admin route or /v1 (no credentials) and pushing up to MB_PER_CONNECTION
(default 16) of it, then stalling with the socket open; then CONNECTIONS more
that send a 10-byte body's first 3 bytes and stall. Prints the proxy's RSS
(VmRSS, and the peak VmHWM) before, while all are held, and after they close,
and how long the stalled small bodies were kept before the proxy answered.
"""
import socket
import sys
import time
from urllib.parse import urlparse


def rss(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) // 1024
    return out


def main():
    base, pid = sys.argv[1], int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 48
    per = (int(sys.argv[4]) if len(sys.argv) > 4 else 16) << 20
    u = urlparse(base)
    addr = (u.hostname, u.port)
    print(f"before: {rss(pid)} (MiB)")
    held = []
    pushed = 0
    paths = ["/login", "/import_keys", "/v1/chat/completions"]
    chunk = b"a" * (64 << 10)
    for i in range(n):
        s = socket.create_connection(addr)
        s.sendall(f"POST {paths[i % 3]} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  f"Content-Length: 47185920\r\n\r\n".encode())
        s.setblocking(False)
        sent, deadline = 0, time.time() + 2
        while sent < per and time.time() < deadline:
            try:
                sent += s.send(chunk)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
        pushed += sent
        held.append(s)
    small = []
    for i in range(n):
        s = socket.create_connection(addr)
        s.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: 10\r\n\r\nabc")
        small.append((s, time.time()))
    time.sleep(1)
    print(f"while {n} big bodies ({pushed >> 20} MiB pushed in all) and {n} stalled small ones are held: {rss(pid)}")
    kept = []
    for s, t0 in small:
        s.settimeout(120)
        try:
            head = s.recv(64).split(b"\r\n")[0].decode(errors="replace")
        except OSError as e:
            head = repr(e)
        kept.append((time.time() - t0, head))
    for s in held:
        s.close()
    for s, _ in small:
        s.close()
    time.sleep(1.5)
    longest = max(k[0] for k in kept)
    answers = sorted({k[1] for k in kept})
    print(f"stalled 10-byte bodies answered after at most {longest:.1f} s with {answers}")
    print(f"after: {rss(pid)}")


if __name__ == "__main__":
    main()
