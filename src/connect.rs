//! What each coding agent needs to work through the proxy, printed as the
//! file it reads or as shell `export` lines, with the model's window and
//! largest output from the catalog filled in (`siliconflow-proxy connect
//! AGENT`, and the admin's Connect page). Pure: text in, text out.
//!
//! - Codex (`~/.codex/config.toml`): a custom provider on the Responses
//!   API, with `model_context_window` and `model_auto_compact_token_limit`
//!   (90% of the window, Codex's own rule), so that it compacts before the
//!   upstream refuses.
//! - Claude Code (`export` lines): base URL, token, every model variable,
//!   `CLAUDE_CODE_AUTO_COMPACT_WINDOW` (it compacts against the smaller of
//!   this and its model's window; it takes 100,000 to 1,000,000), and
//!   `CLAUDE_CODE_MAX_OUTPUT_TOKENS`. Read from its 2.1.197 bundle.
//! - opencode (`~/.config/opencode/opencode.json`): an
//!   `@ai-sdk/openai-compatible` provider with `limit.context` and `limit.output`.
//! - Qwen Code (`export` lines): `OPENAI_BASE_URL`, `OPENAI_API_KEY`, `OPENAI_MODEL`.

use crate::catalog::Entry;

/// The agents `connect` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    Codex,
    ClaudeCode,
    Opencode,
    QwenCode,
    GeminiCli,
}

impl Agent {
    pub const ALL: [Agent; 5] =
        [Agent::Codex, Agent::ClaudeCode, Agent::Opencode, Agent::QwenCode, Agent::GeminiCli];

    pub fn parse(name: &str) -> Option<Agent> {
        Some(match name.to_ascii_lowercase().as_str() {
            "codex" => Agent::Codex,
            "claude-code" | "claude" => Agent::ClaudeCode,
            "opencode" => Agent::Opencode,
            "qwen-code" | "qwen" => Agent::QwenCode,
            "gemini-cli" | "gemini" => Agent::GeminiCli,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Agent::Codex => "codex",
            Agent::ClaudeCode => "claude-code",
            Agent::Opencode => "opencode",
            Agent::QwenCode => "qwen-code",
            Agent::GeminiCli => "gemini-cli",
        }
    }

    /// Where the output goes, for the reader.
    pub fn target(self) -> &'static str {
        match self {
            Agent::Codex => "~/.codex/config.toml",
            Agent::ClaudeCode | Agent::QwenCode => "the shell (eval \"$(siliconflow-proxy connect ...)\")",
            Agent::Opencode => "~/.config/opencode/opencode.json",
            Agent::GeminiCli => "the shell",
        }
    }
}

/// What goes into an agent's configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// The proxy's address, without `/v1` (`http://127.0.0.1:7898`).
    pub url: String,
    /// The client key; `None`: a placeholder the user replaces.
    pub key: Option<String>,
    /// The model to call (a SiliconFlow id or an alias).
    pub model: String,
}

/// The placeholder written where a client key goes.
pub const KEY_PLACEHOLDER: &str = "<your client key>";

/// Auto-compaction at this share of the window (Codex's default rule).
const COMPACT_AT: f64 = 0.9;

/// The most output an agent is told to ask for: Claude Code's own default.
/// SiliconFlow counts the prompt and `max_tokens` together against the
/// window ("max_total_tokens ... max_seq_len"), and its models' largest
/// output is often the whole window: an agent asking for that much would
/// overflow on every call.
const AGENT_MAX_OUTPUT: u64 = 32_000;
/// The range Claude Code's auto-compaction window takes.
const CLAUDE_WINDOW_MIN: u64 = 100_000;
const CLAUDE_WINDOW_MAX: u64 = 1_000_000;

/// The agent's configuration, or why it cannot be written.
pub fn render(agent: Agent, o: &Options, entry: Option<&Entry>) -> Result<String, String> {
    let base = o.url.trim_end_matches('/').trim_end_matches("/v1").to_string();
    let window = entry.and_then(|e| e.context_window);
    let output = entry.and_then(|e| e.max_output_tokens);
    let known = |what: &str| match window {
        Some(w) => format!("{what} {w} tokens (the proxy's model catalog)"),
        None => format!("{what} not in the proxy's catalog: set its window by hand"),
    };
    Ok(match agent {
        Agent::Codex => {
            let mut s = String::new();
            s.push_str(&format!("# Codex through siliconflow-proxy at {base}: {}.\n", known(&format!("{}:", o.model))));
            s.push_str("# Write it to ~/.codex/config.toml, then run: codex exec \"your task\"\n");
            s.push_str(&format!("model = {}\n", toml_str(&o.model)));
            s.push_str("model_provider = \"siliconflow-proxy\"\n");
            if let Some(w) = window {
                s.push_str(&format!("model_context_window = {w}\n"));
                s.push_str(&format!("model_auto_compact_token_limit = {}\n", (w as f64 * COMPACT_AT) as u64));
            }
            s.push_str("\n[model_providers.siliconflow-proxy]\nname = \"siliconflow-proxy\"\n");
            s.push_str(&format!("base_url = {}\n", toml_str(&format!("{base}/v1"))));
            match &o.key {
                Some(k) => s.push_str(&format!("experimental_bearer_token = {}\n", toml_str(k))),
                None => s.push_str(
                    "# The key from the environment: export SILICONFLOW_PROXY_KEY='<your client key>'\nenv_key = \"SILICONFLOW_PROXY_KEY\"\n",
                ),
            }
            s.push_str("wire_api = \"responses\"\n");
            s
        }
        Agent::ClaudeCode => {
            let key = o.key.as_deref().unwrap_or(KEY_PLACEHOLDER);
            let mut s = format!("# Claude Code through siliconflow-proxy at {base}: {}.\n", known(&format!("{}:", o.model)));
            s.push_str("# Run: eval \"$(siliconflow-proxy connect claude-code ...)\", then: claude\n");
            s.push_str(&format!("export ANTHROPIC_BASE_URL={}\n", sh(&base)));
            s.push_str(&format!("export ANTHROPIC_AUTH_TOKEN={}\n", sh(key)));
            for var in [
                "ANTHROPIC_MODEL",
                "ANTHROPIC_DEFAULT_OPUS_MODEL",
                "ANTHROPIC_DEFAULT_SONNET_MODEL",
                "ANTHROPIC_DEFAULT_HAIKU_MODEL",
                "CLAUDE_CODE_SUBAGENT_MODEL",
            ] {
                s.push_str(&format!("export {var}={}\n", sh(&o.model)));
            }
            if let Some(w) = window {
                // It compacts against the smaller of this and its model's window.
                s.push_str(&format!(
                    "export CLAUDE_CODE_AUTO_COMPACT_WINDOW={}\n",
                    w.clamp(CLAUDE_WINDOW_MIN, CLAUDE_WINDOW_MAX)
                ));
            }
            if let Some(out) = output {
                s.push_str(&format!("export CLAUDE_CODE_MAX_OUTPUT_TOKENS={}\n", out.min(AGENT_MAX_OUTPUT)));
            }
            // Its telemetry has nowhere to go here (the proxy answers it 404).
            s.push_str("export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1\n");
            s
        }
        Agent::QwenCode => {
            let key = o.key.as_deref().unwrap_or(KEY_PLACEHOLDER);
            let mut s = format!("# Qwen Code through siliconflow-proxy at {base}: {}.\n", known(&format!("{}:", o.model)));
            s.push_str("# Run: eval \"$(siliconflow-proxy connect qwen-code ...)\", then: qwen\n");
            s.push_str(&format!("export OPENAI_BASE_URL={}\n", sh(&format!("{base}/v1"))));
            s.push_str(&format!("export OPENAI_API_KEY={}\n", sh(key)));
            s.push_str(&format!("export OPENAI_MODEL={}\n", sh(&o.model)));
            s
        }
        Agent::Opencode => {
            let key = o.key.as_deref().unwrap_or(KEY_PLACEHOLDER);
            let mut limit = serde_json::Map::new();
            if let Some(w) = window {
                limit.insert("context".into(), w.into());
            }
            if let Some(out) = output {
                limit.insert("output".into(), out.min(AGENT_MAX_OUTPUT).into());
            }
            let mut model = serde_json::json!({"name": o.model});
            if !limit.is_empty() {
                model["limit"] = serde_json::Value::Object(limit);
            }
            let config = serde_json::json!({
                "$schema": "https://opencode.ai/config.json",
                "provider": {"siliconflow-proxy": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "siliconflow-proxy",
                    "options": {"baseURL": format!("{base}/v1"), "apiKey": key},
                    "models": {o.model.clone(): model},
                }},
                "model": format!("siliconflow-proxy/{}", o.model),
            });
            let mut s = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
            s.push('\n');
            s
        }
        Agent::GeminiCli => {
            return Err(
                "Gemini CLI speaks the Gemini API, which this proxy does not serve yet (issue #35); use codex, claude-code, opencode or qwen-code".into(),
            )
        }
    })
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A shell word, single-quoted.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(window: u64, output: u64) -> Entry {
        let mut e =
            crate::catalog::Patch { id: "deepseek-ai/DeepSeek-V3.2".into(), fields: Default::default() }
                .over(None)
                .unwrap();
        e.context_window = Some(window);
        e.max_output_tokens = Some(output);
        e
    }

    fn options(key: Option<&str>) -> Options {
        Options {
            url: "http://127.0.0.1:7898/v1".into(),
            key: key.map(str::to_string),
            model: "deepseek-ai/DeepSeek-V3.2".into(),
        }
    }

    #[test]
    fn codex_gets_a_provider_and_the_window_with_compaction_at_90_percent() {
        let s = render(Agent::Codex, &options(Some("sk-\"x")), Some(&entry(163840, 8192))).unwrap();
        assert!(s.contains("model = \"deepseek-ai/DeepSeek-V3.2\"\n"), "{s}");
        assert!(s.contains("model_context_window = 163840\n"));
        assert!(s.contains("model_auto_compact_token_limit = 147456\n"));
        assert!(s.contains("base_url = \"http://127.0.0.1:7898/v1\"\n"), "no /v1/v1: {s}");
        assert!(s.contains("experimental_bearer_token = \"sk-\\\"x\"\n"));
        assert!(s.contains("wire_api = \"responses\""));
        let s = render(Agent::Codex, &options(None), None).unwrap();
        assert!(s.contains("env_key = \"SILICONFLOW_PROXY_KEY\"") && !s.contains("model_context_window"));
    }

    #[test]
    fn claude_code_gets_every_model_variable_and_its_window_within_the_range_it_takes() {
        let s = render(Agent::ClaudeCode, &options(Some("it's")), Some(&entry(65536, 8192))).unwrap();
        assert!(s.contains("export ANTHROPIC_BASE_URL='http://127.0.0.1:7898'\n"), "{s}");
        assert!(s.contains("export ANTHROPIC_AUTH_TOKEN='it'\\''s'\n"));
        assert!(s.contains("export ANTHROPIC_DEFAULT_HAIKU_MODEL='deepseek-ai/DeepSeek-V3.2'\n"));
        assert!(s.contains("export CLAUDE_CODE_AUTO_COMPACT_WINDOW=100000\n"), "clamped to its least");
        assert!(s.contains("export CLAUDE_CODE_MAX_OUTPUT_TOKENS=8192\n"));
        let s = render(Agent::ClaudeCode, &options(None), Some(&entry(262144, 262144))).unwrap();
        assert!(
            s.contains("CLAUDE_CODE_AUTO_COMPACT_WINDOW=262144")
                && s.contains("CLAUDE_CODE_MAX_OUTPUT_TOKENS=32000")
        );
        assert!(s.contains(KEY_PLACEHOLDER));
    }

    #[test]
    fn opencode_and_qwen_code_get_their_shapes() {
        let s = render(Agent::Opencode, &options(Some("k")), Some(&entry(131072, 4096))).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let p = &v["provider"]["siliconflow-proxy"];
        assert_eq!(p["npm"], "@ai-sdk/openai-compatible");
        assert_eq!(p["options"]["baseURL"], "http://127.0.0.1:7898/v1");
        assert_eq!(p["models"]["deepseek-ai/DeepSeek-V3.2"]["limit"]["context"], 131072);
        assert_eq!(p["models"]["deepseek-ai/DeepSeek-V3.2"]["limit"]["output"], 4096);
        assert_eq!(v["model"], "siliconflow-proxy/deepseek-ai/DeepSeek-V3.2");
        let s = render(Agent::QwenCode, &options(Some("k")), None).unwrap();
        assert!(s.contains("export OPENAI_BASE_URL='http://127.0.0.1:7898/v1'\nexport OPENAI_API_KEY='k'\nexport OPENAI_MODEL='deepseek-ai/DeepSeek-V3.2'\n"), "{s}");
        assert!(render(Agent::GeminiCli, &options(None), None).unwrap_err().contains("#35"));
        assert_eq!(Agent::parse("Claude-Code"), Some(Agent::ClaudeCode));
        assert_eq!(Agent::parse("vim"), None);
    }
}
