"""End-to-end: the real Codex CLI (`codex exec`, Responses API) through the proxy binary to the
fake SiliconFlow's chat completions, in a scratch folder. The fake's thinking model answers
Codex's shell tool with a command that writes proof.txt, then answers the command's output with
"All done: <its last line>". Usage: python3 codex_e2e.py PATH_TO_BINARY
Without `codex` on PATH the check is skipped, unless CI is set (then it fails).
Prints 'N passed, M failed' and exits non-zero on any failure.
"""
import os
import shutil
import sys
import tempfile
import time

from harness import CLIENT, GOOD, Checks, Stack, run_agent

MODEL = "deepseek-ai/DeepSeek-V3.2"
PROOF = "codex-was-here"  # what the fake's command writes to proof.txt
FINAL = "All done: wrote-proof"  # the fake's last answer, quoting the command's output
TIMEOUT = 180
# No other host: analytics (ab.chatgpt.com) and the plugin sync (github.com, api.github.com)
# are the calls Codex 0.171.0 makes besides the model provider; update checks off for safety.
CONFIG = """model = "{model}"
model_provider = "sfproxy"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false

[model_providers.sfproxy]
name = "siliconflow-proxy"
base_url = "{base}/v1"
env_key = "SFP_E2E_KEY"
wire_api = "responses"
"""


def run_codex(base, scratch):
    """`codex exec` in `scratch` with its own CODEX_HOME and HOME; returns (code, stdout, stderr)."""
    home = tempfile.mkdtemp(prefix="codex-home-")
    codex_home = os.path.join(home, ".codex")
    os.makedirs(codex_home)
    with open(os.path.join(codex_home, "config.toml"), "w") as f:
        f.write(CONFIG.format(model=MODEL, base=base))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env.update(HOME=home, CODEX_HOME=codex_home, SFP_E2E_KEY=CLIENT, NO_COLOR="1")
    cmd = ["codex", "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
           "--color", "never", "-C", scratch,
           "Create a file named proof.txt in the current directory containing the text "
           f"{PROOF}, using the shell tool."]
    try:
        return run_agent(cmd, scratch, env, TIMEOUT)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main():
    checks = Checks()
    if shutil.which("codex") is None:
        if os.environ.get("CI"):
            def missing():
                raise AssertionError("`codex` is not on PATH, and CI is set")
            checks.run("codex on PATH", missing)
        else:
            print("skip codex exec: `codex` is not on PATH (npm install -g @openai/codex@0.171.0)")
            checks.skipped += 1
        checks.finish()
    stack = Stack(sys.argv[1])
    scratch = tempfile.mkdtemp(prefix="codex-scratch-")
    try:
        imported = stack.admin("POST", "/import_keys", {"keys": GOOD})
        assert imported["added"] == 1, imported
        started = time.time()
        code, out, err = run_codex(stack.base, scratch)
        print(f"     codex exec took {time.time() - started:.1f} s", flush=True)

        def exit_code():
            assert code == 0, f"exit {code}; stderr tail: {err[-1500:]}"

        def proof_on_disk():
            path = os.path.join(scratch, "proof.txt")
            assert os.path.exists(path), f"no proof.txt in {os.listdir(scratch)}"
            with open(path) as f:
                assert f.read() == PROOF

        def final_text():
            assert FINAL in out, f"stdout: {out!r}"

        def upstream_calls():
            # What the fake answered: one tool call, one final text; both streamed, on the model asked.
            chats = stack.fake_get("/__chats")
            assert [(c["kind"], c["model"], c["stream"]) for c in chats] == [
                ("tool_call", MODEL, True), ("tool_result", MODEL, True)], chats
            last = stack.fake_get("/__last_chat")
            assert all(t["type"] == "function" for t in last["tools"]), "built-in tools never reach the upstream"
            assert "exec_command" in [t["function"]["name"] for t in last["tools"]], last["tools"]

        def logged():
            chats = stack.fake_get("/__chats")
            deadline = time.time() + 15
            while True:
                rows = stack.admin("GET", "/logs?endpoint=/v1/responses&page_size=100")["logs"]
                if len(rows) >= len(chats) or time.time() > deadline:
                    break
                time.sleep(0.1)
            assert len(rows) == 2, rows
            assert all(r["endpoint"] == "/v1/responses" and r["status"] == 200 for r in rows), rows
            got = sorted((r["input_tokens"], r["output_tokens"]) for r in rows)
            want = sorted((c["usage"]["prompt_tokens"], c["usage"]["completion_tokens"]) for c in chats)
            assert got == want, (got, want)

        for name, fn in [("codex exec exits 0", exit_code),
                         ("the shell command ran: proof.txt written in the scratch folder", proof_on_disk),
                         ("the model's final text printed", final_text),
                         ("upstream saw a tool call turn and a tool result turn", upstream_calls),
                         ("request log: 2 rows on /v1/responses with the upstream's tokens", logged)]:
            checks.run(name, fn)
    finally:
        stack.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    checks.finish()


if __name__ == "__main__":
    main()
