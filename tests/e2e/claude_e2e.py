"""End-to-end: the real Claude Code CLI (`claude -p`) through the proxy binary, with nothing
but ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN set: no model variables, so it asks for its
own Claude names, which the fake SiliconFlow (like the real one) answers with 400 code 20012;
the README's starting alias table (MODEL_ALIASES) maps them to models it serves. Checks a plain
answer, a Bash tool round trip (its effect on disk), and a wrong key failing within seconds.
Usage: python3 claude_e2e.py PATH_TO_BINARY
Without `claude` on PATH the check is skipped, unless CI is set (then it fails).
Prints 'N passed, M failed' and exits non-zero on any failure.
"""
import os
import shutil
import sys
import tempfile
import time
import urllib.request

from harness import CLIENT, GOOD, Checks, Stack, run_agent

# The README's starting table (as in .env.example).
ALIASES = ("claude-*haiku*=Qwen/Qwen3-8B,claude-*=deepseek-ai/DeepSeek-V3.2,"
           "gpt-*mini*=Qwen/Qwen3-8B,gpt-*=deepseek-ai/DeepSeek-V3.2")
PROOF = "claude-was-here"  # what the fake's command writes to proof.txt
FINAL = "All done: wrote-proof"  # the fake's last answer, quoting the command's output
TIMEOUT = 180


def run_claude(base, token, scratch, prompt, *flags, extra=None):
    """`claude -p` in `scratch` with its own HOME; returns (code, stdout, stderr, seconds)."""
    home = tempfile.mkdtemp(prefix="claude-home-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_"))}
    env.update(extra or {})
    env.update(HOME=home, ANTHROPIC_BASE_URL=base, ANTHROPIC_AUTH_TOKEN=token, NO_COLOR="1",
               # No calls but the model's: no update checks, no telemetry, no error reports.
               DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1")
    started = time.time()
    try:
        code, out, err = run_agent(["claude", "-p", prompt, *flags], scratch, env, TIMEOUT)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return code, out, err, time.time() - started


def refusals(stack, reason):
    with urllib.request.urlopen(stack.base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    line = f'siliconflow_proxy_refusals_total{{reason="{reason}"}} '
    return sum(float(l[len(line):]) for l in text.splitlines() if l.startswith(line))


def main():
    checks = Checks()
    if shutil.which("claude") is None:
        if os.environ.get("CI"):
            def missing():
                raise AssertionError("`claude` is not on PATH, and CI is set")
            checks.run("claude on PATH", missing)
        else:
            print("skip claude -p: `claude` is not on PATH (npm install -g @anthropic-ai/claude-code@2.1.197)")
            checks.skipped += 1
        checks.finish()
    stack = Stack(sys.argv[1], settings={"MODEL_ALIASES": ALIASES})
    scratch = tempfile.mkdtemp(prefix="claude-scratch-")
    try:
        imported = stack.admin("POST", "/import_keys", {"keys": GOOD})
        assert imported["added"] == 1, imported

        def plain_answer():
            code, out, err, _ = run_claude(stack.base, CLIENT, scratch, "Say hello.")
            assert code == 0, f"exit {code}; stdout {out[-500:]!r}; stderr {err[-1500:]!r}"
            assert "Hi there" in out, out

        def bash_round_trip():
            code, out, err, took = run_claude(stack.base, CLIENT, scratch,
                                              "Create proof.txt in this folder using Bash.", "--allowedTools", "Bash")
            print(f"     claude -p with a Bash tool call took {took:.1f} s", flush=True)
            assert code == 0, f"exit {code}; stdout {out[-500:]!r}; stderr {err[-1500:]!r}"
            path = os.path.join(scratch, "proof.txt")
            assert os.path.exists(path), f"no proof.txt in {os.listdir(scratch)}"
            with open(path) as f:
                assert f.read() == PROOF
            assert FINAL in out, out

        def upstream_and_log():
            calls = stack.fake_get("/__messages")
            kinds = [c["kind"] for c in calls]
            assert "tool_call" in kinds and "tool_result" in kinds, calls
            # Claude Code asked for Claude names; the upstream saw only models it serves.
            assert {c["model"] for c in calls} <= {"Qwen/Qwen3-8B", "deepseek-ai/DeepSeek-V3.2"}, calls
            deadline = time.time() + 15
            while True:
                rows = stack.admin("GET", "/logs?endpoint=/v1/messages&page_size=100")["logs"]
                if len(rows) >= len(calls) or time.time() > deadline:
                    break
                time.sleep(0.1)
            assert len(rows) == len(calls), (rows, calls)
            assert all(r["status"] == 200 and (r["requested_model"] or "").startswith("claude-") for r in rows), rows
            got = sorted((r["input_tokens"], r["output_tokens"]) for r in rows)
            want = sorted((c["usage"]["input_tokens"], c["usage"]["output_tokens"]) for c in calls)
            assert got == want, (got, want)

        def wrong_key_fails_fast():
            before = refusals(stack, "unauthorized")
            code, out, err, took = run_claude(stack.base, "not-a-client-key", scratch, "Say hello.")
            assert code != 0, out
            assert "401" in out + err or "authenticat" in (out + err).lower(), (out, err)
            assert took < 15, f"took {took:.1f} s: retried instead of stopping"
            # One call, not eleven: the proxy's 401 says x-should-retry: false.
            assert refusals(stack, "unauthorized") - before <= 2, refusals(stack, "unauthorized") - before

        def overflow_is_prompt_too_long():
            # A model whose window its first request (tools, system prompt: ~78 KB) overflows:
            # SiliconFlow's 20015 reaches it in Anthropic's wording, which it recognises.
            code, out, err, _ = run_claude(stack.base, CLIENT, scratch, "Say hello.",
                                           extra={"ANTHROPIC_MODEL": "Qwen/tiny-window"})
            said = out + err
            assert "Prompt is too long" in said, (code, said[-1500:])
            assert "API Error: 400 length of prompt_tokens" not in said, said[-1500:]

        for name, fn in [("claude -p answers with only a base URL and a token", plain_answer),
                         ("claude -p runs Bash through the gateway: proof.txt written, result quoted", bash_round_trip),
                         ("upstream saw SiliconFlow models only; the log keeps the Claude names", upstream_and_log),
                         ("a wrong key fails within seconds, without retries", wrong_key_fails_fast),
                         ("an overflow reaches it as 'Prompt is too long'", overflow_is_prompt_too_long)]:
            checks.run(name, fn)
    finally:
        stack.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    checks.finish()


if __name__ == "__main__":
    main()
