//! Model aliases: names clients ask for (`claude-opus-4-8`, `gpt-4o`) mapped
//! to SiliconFlow models. A pattern is a name in which `*` stands for any
//! run of characters, matched ignoring ASCII case; the first pattern that
//! matches wins; an alias is applied once (its target is not looked up
//! again). This file is pure; `table` holds the live table (stored by
//! `db::queries::aliases`) in a snapshot the request path reads without
//! waiting.

mod table;

use serde::{Deserialize, Serialize};

pub use table::AliasTable;

/// The longest pattern or target (a model name's limit on the request path).
pub const MAX_NAME_BYTES: usize = 256;
/// The most rules one table holds.
pub const MAX_RULES: usize = 200;

/// One rule: requests naming a model that matches `pattern` call `model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    pub pattern: String,
    pub model: String,
}

/// A checked table, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aliases {
    rules: Vec<Alias>,
}

/// A requested name and the model it calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// The model to call upstream (the requested name when no rule matches).
    pub model: &'a str,
    /// Whether a rule changed the name.
    pub aliased: bool,
}

impl Aliases {
    /// Checks every rule: trimmed names of 1 to 256 printable characters, a
    /// target without `*`, at most 200 rules. The error names the rule.
    pub fn new(rules: Vec<Alias>) -> Result<Self, String> {
        if rules.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} aliases ({} given)", rules.len()));
        }
        let mut checked = Vec::with_capacity(rules.len());
        for (i, Alias { pattern, model }) in rules.into_iter().enumerate() {
            let (pattern, model) = (pattern.trim().to_string(), model.trim().to_string());
            let n = i + 1;
            for (what, v) in [("pattern", &pattern), ("model", &model)] {
                if v.is_empty() || v.len() > MAX_NAME_BYTES {
                    return Err(format!("alias {n}: the {what} must be 1 to {MAX_NAME_BYTES} bytes"));
                }
                if let Some(c) = crate::names::hidden_char(v) {
                    return Err(format!(
                        "alias {n}: the {what} {v:?} holds the character U+{:04X}, which is not shown (control, zero-width or bidi characters are refused)",
                        c as u32
                    ));
                }
            }
            if let Err(why) = crate::names::check_model_name(&model) {
                return Err(format!("alias {n}: the model {model:?} {why}"));
            }
            if model.contains('*') {
                return Err(format!("alias {n}: the model {model:?} is a name, not a pattern (no *)"));
            }
            checked.push(Alias { pattern, model });
        }
        Ok(Aliases { rules: checked })
    }

    /// The `MODEL_ALIASES` form: `pattern=model` pairs separated by commas,
    /// semicolons or new lines (`claude-*haiku*=Qwen/Qwen3-8B,gpt-*=...`).
    pub fn parse_list(text: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for part in text.split([',', ';', '\n']).map(str::trim).filter(|p| !p.is_empty()) {
            let Some((pattern, model)) = part.split_once('=') else {
                return Err(format!("{part:?} is not pattern=model"));
            };
            rules.push(Alias { pattern: pattern.to_string(), model: model.to_string() });
        }
        Aliases::new(rules)
    }

    pub fn rules(&self) -> &[Alias] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The model a request naming `requested` calls.
    pub fn resolve<'a>(&'a self, requested: &'a str) -> Resolved<'a> {
        for rule in &self.rules {
            if glob_match(rule.pattern.as_bytes(), requested.as_bytes()) {
                return Resolved { model: &rule.model, aliased: rule.model != requested };
            }
        }
        Resolved { model: requested, aliased: false }
    }
}

/// Whether `text` matches `pattern`, where `*` is any run of bytes (empty
/// too), ignoring ASCII case. Linear backtracking on the last star: at most
/// pattern length times text length steps (256 x 256).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // After the last star seen: where the pattern resumes, and the text
    // position the star's run would end at next.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p + 1, t));
            p += 1;
        } else if p < pattern.len() && pattern[p].eq_ignore_ascii_case(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((resume, run_end)) = star {
            // Let the star take one more byte and try again from there.
            p = resume;
            t = run_end + 1;
            star = Some((resume, run_end + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Aliases {
        Aliases::parse_list(text).unwrap()
    }

    #[test]
    fn stars_match_any_run_ignoring_case() {
        assert!(glob_match(b"claude-*", b"claude-opus-4-8"));
        assert!(glob_match(b"claude-*haiku*", b"claude-3-5-haiku-20241022"));
        assert!(glob_match(b"claude-*haiku*", b"Claude-Haiku-4-5"));
        assert!(!glob_match(b"claude-*haiku*", b"claude-opus-4-8"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"gpt-4o", b"GPT-4o"));
        assert!(!glob_match(b"gpt-4o", b"gpt-4o-mini"));
        assert!(glob_match(b"*-mini", b"gpt-4o-mini"));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(b"**a", b"a"));
    }

    #[test]
    fn the_first_matching_rule_wins_and_is_applied_once() {
        let t = table("claude-*haiku*=Qwen/Qwen3-8B, claude-*=deepseek-ai/DeepSeek-V3.2\ngpt-*=claude-x");
        assert_eq!(t.resolve("claude-haiku-4-5"), Resolved { model: "Qwen/Qwen3-8B", aliased: true });
        assert_eq!(t.resolve("claude-opus-4-8").model, "deepseek-ai/DeepSeek-V3.2");
        // gpt-* points at a name another rule would match: not followed.
        assert_eq!(t.resolve("gpt-4o").model, "claude-x");
        assert_eq!(t.resolve("Qwen/Qwen3-8B"), Resolved { model: "Qwen/Qwen3-8B", aliased: false });
        // A rule naming the model itself changes nothing.
        assert!(!table("Qwen/*=Qwen/Qwen3-8B").resolve("Qwen/Qwen3-8B").aliased);
    }

    #[test]
    fn bad_tables_are_refused_with_the_rule_named() {
        assert!(Aliases::parse_list("claude-*").unwrap_err().contains("pattern=model"));
        assert!(Aliases::parse_list("a=b,c=").unwrap_err().starts_with("alias 2"));
        assert!(Aliases::parse_list("a=Qwen/*").unwrap_err().contains("no *"));
        assert!(Aliases::parse_list(&format!("a={}", "m".repeat(257))).is_err());
        assert!(Aliases::new(vec![Alias { pattern: "a\nb".into(), model: "m".into() }]).is_err());
        for hidden in ["\u{200B}", "\u{202E}", "\u{2028}", "\u{FEFF}"] {
            let pattern = Alias { pattern: format!("claude-{hidden}*"), model: "m".into() };
            assert!(Aliases::new(vec![pattern]).unwrap_err().contains("not shown"), "{hidden:?}");
            let model = Alias { pattern: "claude-*".into(), model: format!("Qwen/{hidden}Qwen3-8B") };
            assert!(Aliases::new(vec![model]).is_err(), "{hidden:?}");
        }
        assert!(Aliases::parse_list("a=Qwen/../deepseek-ai/DeepSeek-R1").unwrap_err().contains("segment"));
        let many: Vec<String> = (0..=MAX_RULES).map(|i| format!("m{i}=x")).collect();
        assert!(Aliases::parse_list(&many.join(",")).unwrap_err().contains("at most"));
        assert_eq!(table(" a = b ;; ").rules(), &[Alias { pattern: "a".into(), model: "b".into() }]);
        assert!(table("").is_empty());
    }
}
