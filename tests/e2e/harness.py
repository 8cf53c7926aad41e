"""Shared by the end-to-end checks: start the fake SiliconFlow and the proxy
binary on free ports, call the admin API, report like a test runner."""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = "sk-e2e-good-000000000000000001"
CLIENT = "e2e-client-key"
ADMIN = ("admin", "e2e-admin-pass")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_http(url, limit=60):
    start = time.time()
    while time.time() - start < limit:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class Stack:
    """The fake upstream and the proxy, stopped on exit."""

    def __init__(self, binary, user_info="gone", settings=None):
        """`user_info="gone"`: the fake answers 410 there, as SiliconFlow China does today;
        `settings`: more environment for the proxy."""
        fake_port, proxy_port = free_port(), free_port()
        fake_env = dict(os.environ, FAKE_USER_INFO=user_info)
        self.fake = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_siliconflow.py"), str(fake_port)],
                                     env=fake_env)
        self.tmp = tempfile.mkdtemp()
        env = {
            "PATH": os.environ.get("PATH", ""), "HOST": "127.0.0.1", "PORT": str(proxy_port),
            "DATABASE_URL": f"sqlite://{self.tmp}/e2e.db", "SILICONFLOW_BASE_URL": f"http://127.0.0.1:{fake_port}",
            "API_KEY": CLIENT, "ADMIN_PASSWORD": ADMIN[1], "AUTO_REFRESH_INTERVAL": "0", "LOG_FLUSH_MS": "100",
            "RUST_LOG": "warn",
        }
        env.update(settings or {})
        self.proxy = subprocess.Popen([os.path.abspath(binary)], env=env, cwd=self.tmp)
        self.base = f"http://127.0.0.1:{proxy_port}"
        self.fake_base = f"http://127.0.0.1:{fake_port}"
        wait_http(f"http://127.0.0.1:{fake_port}/v1/models")
        wait_http(self.base + "/health")

    def admin(self, method, path, body=None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode())
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def fake_get(self, path):
        """The fake upstream's test hooks (`/__last_chat`, `/__chats`): JSON, no auth."""
        with urllib.request.urlopen(self.fake_base + path, timeout=10) as r:
            return json.loads(r.read())

    def chat(self, model="Qwen/Qwen3-8B", stream=False):
        req = urllib.request.Request(self.base + "/v1/chat/completions", method="POST",
                                     data=json.dumps({"model": model, "stream": stream, "messages": []}).encode())
        req.add_header("Authorization", f"Bearer {CLIENT}")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()

    def stop(self):
        self.proxy.terminate()
        try:
            self.proxy.wait(timeout=30)
        finally:
            self.fake.terminate()


def run_agent(cmd, cwd, env, timeout):
    """Runs an agent's CLI in `cwd`, in a session of its own (killed whole at the timeout:
    node, the agent's binary, its shells); returns (code, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{cmd[0]} did not finish in {timeout} s; stderr tail: {err[-2000:]}")
    return proc.returncode, out, err


class Checks:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def run(self, name, fn):
        try:
            fn()
            self.passed += 1
            print(f"ok   {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every failure and go on
            self.failed += 1
            print(f"FAIL {name}: {e!r}", flush=True)

    def finish(self):
        line = f"{self.passed} passed, {self.failed} failed"
        if self.skipped:
            line += f", {self.skipped} skipped"
        print(line)
        sys.exit(1 if self.failed else 0)
