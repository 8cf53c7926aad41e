//! Model names as the proxy takes them, wherever one is named (a request's
//! `model`, an alias's pattern and target, a client's model list): at most
//! 256 bytes, and never a character a person cannot see or a path trick that
//! reads as another model. A name is compared against a client's list as it
//! is written; a name with a `..` segment (`Qwen/../deepseek-ai/DeepSeek-R1`)
//! or a backslash would pass a `Qwen/*` rule and mean something else to a
//! router that normalises paths, and a zero-width or bidi character makes
//! two names that look alike differ. Pure: the bottom floor.

/// The longest model name (SiliconFlow's are under 100 bytes; every log row
/// and the stats' keys store it).
pub const MAX_MODEL_BYTES: usize = 256;

/// Characters that print as nothing or reorder what is shown: zero-width
/// spaces and joiners, bidi marks, embeddings, overrides and isolates, line
/// and paragraph separators, the byte order mark, soft hyphens, tags.
pub fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{E0000}'..='\u{E0FFF}')
}

/// A control or an invisible character (see `invisible`), named for an error.
pub fn hidden_char(s: &str) -> Option<char> {
    if s.is_ascii() {
        // Most names: only the ASCII controls can hide there.
        return s.as_bytes().iter().find(|b| **b < 0x20 || **b == 0x7f).map(|b| char::from(*b));
    }
    s.chars().find(|c| c.is_control() || invisible(*c))
}

/// Why `name` is not a model name the proxy takes, if it is not.
pub fn check_model_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_MODEL_BYTES {
        return Err(format!("is {} bytes long; model names are at most {MAX_MODEL_BYTES} bytes", name.len()));
    }
    if let Some(c) = hidden_char(name) {
        return Err(format!(
            "holds the character U+{:04X}, which is not shown; model names are printable",
            c as u32
        ));
    }
    let bytes = name.as_bytes();
    if bytes.contains(&b'\\') {
        return Err("holds a backslash; model names are `owner/name`".into());
    }
    if bytes.contains(&b'.') && name.split('/').any(|segment| segment == ".." || segment == ".") {
        return Err("holds a `.` or `..` segment; model names are `owner/name`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_hide_or_walk_paths_are_refused_and_real_ones_pass() {
        for ok in [
            "Qwen/Qwen3-8B",
            "deepseek-ai/DeepSeek-V3.2",
            "claude-opus-4-8",
            "Pro/moonshotai/Kimi-K2",
            "a..b",
            "",
        ] {
            assert_eq!(check_model_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "Qwen/../deepseek-ai/DeepSeek-R1",
            "Qwen/./x",
            "..",
            "Qwen\\..\\deepseek",
            "Qwen/x\u{0}",
            "Qwen/\u{200B}x",
            "Qwen/x\u{202E}",
            "Qwen/x\u{2028}",
            "\u{FEFF}Qwen/x",
            "Qwen/x\u{E0041}",
        ] {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_model_name(&"m".repeat(257)).unwrap_err().contains("at most 256 bytes"));
        assert!(check_model_name(&"m".repeat(256)).is_ok());
        assert!(check_model_name("a\u{202E}b").unwrap_err().contains("U+202E"));
    }
}
