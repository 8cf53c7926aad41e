//! A client's model list: exact names and `prefix/*` patterns.

/// One entry of a client's model list: an exact name, or `prefix/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRule {
    Exact(String),
    Prefix(String),
}

impl ModelRule {
    pub fn parse(s: &str) -> Result<ModelRule, String> {
        let s = s.trim();
        if s.is_empty() || s.len() > 200 {
            return Err("a model entry must be 1 to 200 characters".into());
        }
        // A pattern's prefix is a name's beginning: the same characters.
        if let Err(why) = crate::names::check_model_name(s.trim_end_matches('*')) {
            return Err(format!("model entry {s:?} {why}"));
        }
        match s.strip_suffix('*') {
            Some(prefix) if prefix.is_empty() || prefix.ends_with('/') => {
                Ok(ModelRule::Prefix(prefix.to_string()))
            }
            Some(_) => Err(format!(
                "model entry {s:?}: a pattern is a prefix ending in a slash, then *, like \"Qwen/*\""
            )),
            None if s.contains('*') => Err(format!("model entry {s:?}: * may only end a pattern")),
            None => Ok(ModelRule::Exact(s.to_string())),
        }
    }

    pub fn matches(&self, model: &str) -> bool {
        match self {
            ModelRule::Exact(m) => m == model,
            ModelRule::Prefix(p) => model.starts_with(p.as_str()),
        }
    }

    pub fn text(&self) -> String {
        match self {
            ModelRule::Exact(m) => m.clone(),
            ModelRule::Prefix(p) => format!("{p}*"),
        }
    }
}

/// The stored model list: a JSON array of entries.
pub fn parse_models(stored: Option<&str>) -> Option<Vec<ModelRule>> {
    let list: Vec<String> = serde_json::from_str(stored?).ok()?;
    Some(list.iter().filter_map(|m| ModelRule::parse(m).ok()).collect())
}
