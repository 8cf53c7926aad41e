"""End-to-end: each coding agent set up with exactly what `siliconflow-proxy connect AGENT`
printed (nothing added by hand), against the release binary and the fake SiliconFlow, finishing
a task with a shell tool call: Codex (its config.toml), Claude Code (export lines), Qwen Code
(export lines) and opencode (its opencode.json). The model is one the catalog knows, so each
config carries its window. Usage: python3 connect_e2e.py PATH_TO_BINARY
An agent not on PATH is skipped, unless CI is set (then it fails).
Prints 'N passed, M failed' and exits non-zero on any failure.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from harness import CLIENT, GOOD, Checks, Stack, run_agent

MODEL = "deepseek-ai/DeepSeek-V3.2"
TIMEOUT = 240
TASK = "Create a file named proof.txt in the current directory by running a shell command, using your shell tool."
# The fake's commands write one of these (its chat agent, its Messages agent).
PROOFS = ("codex-was-here", "claude-was-here")

AGENTS = {
    # agent: (the command on PATH, how it is run)
    "codex": ("codex", lambda scratch: ["codex", "exec", "--skip-git-repo-check",
                                        "--dangerously-bypass-approvals-and-sandbox", "--color", "never",
                                        "-C", scratch, TASK]),
    "claude-code": ("claude", lambda scratch: ["claude", "-p", TASK, "--allowedTools", "Bash"]),
    "qwen-code": ("qwen", lambda scratch: ["qwen", "--yolo", "-p", TASK]),
    # (opencode runs where $PWD says, not in its working directory: --dir says it.)
    "opencode": ("opencode", lambda scratch: ["opencode", "run", "--dir", scratch, "--model",
                                              f"siliconflow-proxy/{MODEL}", TASK]),
}


def connect(binary, agent, base, env):
    """What `connect` prints for `agent` (its stdout, as the user would redirect or eval it)."""
    out = subprocess.run([os.path.abspath(binary), "connect", agent, "--url", base, "--key", CLIENT,
                          "--model", MODEL], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def exports(text):
    """The variables of `export NAME=value` lines, as a shell's eval sets them."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"^export ([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            found[m.group(1)] = shlex.split(m.group(2))[0]
    return found


def run(binary, stack, agent):
    home = tempfile.mkdtemp(prefix=f"{agent}-home-")
    scratch = tempfile.mkdtemp(prefix=f"{agent}-scratch-")
    # The proxy's own variables must not leak into the command: it runs as a user would.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "CODEX_", "ANTHROPIC_", "CLAUDE_", "QWEN_", "OPENCODE_"))}
    env.update(HOME=home, PWD=scratch, NO_COLOR="1", XDG_CONFIG_HOME=os.path.join(home, ".config"))
    config = connect(binary, agent, stack.base, {"PATH": env["PATH"], "HOME": home})
    if agent == "codex":
        os.makedirs(os.path.join(home, ".codex"))
        with open(os.path.join(home, ".codex", "config.toml"), "w") as f:
            f.write(config)
        assert "model_context_window = " in config, config
    elif agent == "opencode":
        os.makedirs(os.path.join(home, ".config", "opencode"))
        with open(os.path.join(home, ".config", "opencode", "opencode.json"), "w") as f:
            f.write(config)
        assert '"context": ' in config, config
    else:
        env.update(exports(config))
    try:
        started = time.time()
        code, out, err = run_agent(AGENTS[agent][1](scratch), scratch, env, TIMEOUT)
        print(f"     {agent} took {time.time() - started:.1f} s", flush=True)
        path = os.path.join(scratch, "proof.txt")
        assert os.path.exists(path), (f"exit {code}; no proof.txt in {os.listdir(scratch)}; "
                                      f"stdout tail: {out[-800:]}; stderr tail: {err[-1500:]}")
        with open(path) as f:
            assert f.read() in PROOFS
        return config
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def main():
    checks = Checks()
    stack = Stack(sys.argv[1])
    try:
        imported = stack.admin("POST", "/import_keys", {"keys": GOOD})
        assert imported["added"] == 1, imported
        for agent, (command, _) in AGENTS.items():
            if shutil.which(command) is None:
                if os.environ.get("CI"):
                    def missing(command=command):
                        raise AssertionError(f"`{command}` is not on PATH, and CI is set")
                    checks.run(f"{agent} on PATH", missing)
                else:
                    print(f"skip {agent}: `{command}` is not on PATH")
                    checks.skipped += 1
                continue
            checks.run(f"{agent}, set up by `connect {agent}` alone, runs a shell command through the proxy",
                       lambda agent=agent: run(sys.argv[1], stack, agent))
    finally:
        stack.stop()
    checks.finish()


if __name__ == "__main__":
    main()
