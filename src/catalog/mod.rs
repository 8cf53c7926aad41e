//! The model catalog: what the proxy knows of each SiliconFlow model (its
//! context window, largest output, input kinds, tool calling, reasoning,
//! prices). Facts as data: a default catalog ships in the binary
//! (`default.json`, dated, each entry with its source named), and the owner
//! overrides or adds entries (`table`: stored, or `MODEL_CATALOG_FILE` at
//! start). An owner's entry is a patch over the default one: the fields it
//! gives replace the default's, the others stay. This file is pure; the
//! request path reads the effective catalog from a snapshot (`table`).

pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use table::CatalogTable;

/// A price in millionths of a CNY (fixed point: money is never a float
/// here). Token prices are per million tokens, so a token costs this many
/// millionths of a millionth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Micros(pub i64);

impl Micros {
    /// From a JSON number in CNY with at most six decimals.
    pub fn from_cny(cny: f64) -> Result<Micros, String> {
        if !cny.is_finite() || !(0.0..=1_000_000.0).contains(&cny) {
            return Err(format!("a price is 0 to 1,000,000 CNY, not {cny}"));
        }
        let micros = (cny * 1e6).round();
        if (cny * 1e6 - micros).abs() > 1e-3 {
            return Err(format!("a price has at most six decimals, not {cny}"));
        }
        Ok(Micros(micros as i64))
    }

    pub fn cny(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, rest) = (self.0 / 1_000_000, (self.0 % 1_000_000).abs());
        let sign = if self.0 < 0 && whole == 0 { "-" } else { "" };
        if rest == 0 {
            return write!(f, "{sign}{whole}");
        }
        let decimals = format!("{rest:06}");
        write!(f, "{sign}{whole}.{}", decimals.trim_end_matches('0'))
    }
}

impl Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A JSON number written as decimals (never as 1e-6), exact: whole
        // CNY as an integer, else the decimals it has.
        let text = self.to_string();
        match serde_json::value::RawValue::from_string(text) {
            Ok(raw) => raw.serialize(s),
            Err(e) => Err(serde::ser::Error::custom(e)),
        }
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Micros::from_cny(f64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Prices in CNY: per million input, output and cached-input tokens; per
/// image, per video, per million characters of speech. `None`: unknown
/// (never taken for free).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub input: Option<Micros>,
    #[serde(default)]
    pub output: Option<Micros>,
    #[serde(default)]
    pub cached_input: Option<Micros>,
    #[serde(default)]
    pub per_image: Option<Micros>,
    #[serde(default)]
    pub per_video: Option<Micros>,
    #[serde(default)]
    pub per_million_characters: Option<Micros>,
}

/// Where an entry's figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The catalog shipped in the binary.
    Default,
    /// The owner's (over the default entry, if there is one).
    Custom,
}

/// One model, as the catalog knows it. `None`: unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: String,
    #[serde(default)]
    pub context_window: Option<u64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    /// What it takes in: `text`, `image` (also `audio`, `video`).
    #[serde(default = "text_only")]
    pub input: Vec<String>,
    #[serde(default)]
    pub tools: Option<bool>,
    #[serde(default)]
    pub reasoning: Option<bool>,
    #[serde(default)]
    pub price: Price,
    /// Set by the catalog, never read from an entry given.
    #[serde(default = "default_source", skip_deserializing)]
    pub source: Source,
}

fn text_only() -> Vec<String> {
    vec!["text".into()]
}

fn default_source() -> Source {
    Source::Default
}

/// The largest window taken (a guard against typing mistakes: 10M tokens).
const MAX_WINDOW: u64 = 10_000_000;
/// The input kinds an entry may name.
const INPUTS: [&str; 4] = ["text", "image", "audio", "video"];
/// The fields an entry (or a patch) may give.
const FIELDS: [&str; 6] = ["context_window", "max_output_tokens", "input", "tools", "reasoning", "price"];

impl Entry {
    /// Checks what serde cannot: the id, the figures' ranges, the kinds.
    fn check(&self) -> Result<(), String> {
        crate::names::check_model_name(&self.id).map_err(|why| format!("the model id {why}"))?;
        if self.id.trim().is_empty() || self.id.contains('*') {
            return Err("the model id must be a name (not empty, no *)".into());
        }
        for (what, v) in
            [("context_window", self.context_window), ("max_output_tokens", self.max_output_tokens)]
        {
            if v.is_some_and(|n| n == 0 || n > MAX_WINDOW) {
                return Err(format!("{}: `{what}` is 1 to {MAX_WINDOW} tokens", self.id));
            }
        }
        if let (Some(w), Some(o)) = (self.context_window, self.max_output_tokens) {
            if o > w {
                return Err(format!(
                    "{}: `max_output_tokens` ({o}) is more than `context_window` ({w})",
                    self.id
                ));
            }
        }
        if self.input.is_empty() || self.input.iter().any(|k| !INPUTS.contains(&k.as_str())) {
            return Err(format!("{}: `input` lists kinds among {}", self.id, INPUTS.join(", ")));
        }
        Ok(())
    }
}

/// The catalog shipped in the binary: its date, its sources, its entries.
#[derive(Debug, Deserialize)]
pub struct Shipped {
    pub date: String,
    pub sources: Vec<ShippedSource>,
    #[serde(default)]
    pub notes: String,
    pub models: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ShippedSource {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub retrieved_as: String,
}

/// The shipped catalog, read once.
pub fn shipped() -> &'static (Shipped, Vec<Entry>) {
    static SHIPPED: std::sync::OnceLock<(Shipped, Vec<Entry>)> = std::sync::OnceLock::new();
    SHIPPED.get_or_init(|| {
        let shipped: Shipped = match serde_json::from_str(include_str!("default.json")) {
            Ok(s) => s,
            Err(e) => {
                log::error!("the shipped model catalog does not read ({e}); it is left empty");
                return (
                    Shipped { date: String::new(), sources: vec![], notes: String::new(), models: vec![] },
                    vec![],
                );
            }
        };
        let entries = shipped
            .models
            .iter()
            .filter_map(|m| {
                let mut m = m.clone();
                // The shipped data names its source by index: that is for the file's readers.
                if let Some(o) = m.as_object_mut() {
                    o.remove("source");
                }
                match serde_json::from_value::<Entry>(m)
                    .map_err(|e| e.to_string())
                    .and_then(|e| e.check().map(|()| e))
                {
                    Ok(e) => Some(e),
                    Err(why) => {
                        log::error!("the shipped model catalog: an entry is left out ({why})");
                        None
                    }
                }
            })
            .collect();
        (shipped, entries)
    })
}

/// An owner's entry: the fields it gives, checked (`Patch::parse`).
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub id: String,
    pub fields: Map<String, Value>,
}

impl Patch {
    /// Reads an owner's fields for `id` (an object with any of `FIELDS`,
    /// `id` and `source` tolerated and ignored), checking the entry they
    /// make over `base` (the default entry, if any).
    pub fn parse(id: &str, body: &Value, base: Option<&Entry>) -> Result<(Patch, Entry), String> {
        let Some(obj) = body.as_object() else { return Err("an entry is a JSON object".into()) };
        let mut fields = Map::new();
        for (k, v) in obj {
            match k.as_str() {
                "id" if v.as_str() == Some(id) => {}
                "id" => return Err(format!("the body's `id` is not {id:?}")),
                "source" => {}
                k if FIELDS.contains(&k) => {
                    fields.insert(k.to_string(), v.clone());
                }
                other => return Err(format!("unknown field `{other}`; an entry has {}", FIELDS.join(", "))),
            }
        }
        let patch = Patch { id: id.to_string(), fields };
        let entry = patch.over(base)?;
        Ok((patch, entry))
    }

    /// The entry this patch makes over `base`: its fields replace the
    /// base's; `price` is merged price by price.
    pub fn over(&self, base: Option<&Entry>) -> Result<Entry, String> {
        let mut v = match base {
            Some(b) => serde_json::to_value(b).map_err(|e| e.to_string())?,
            None => serde_json::json!({"id": self.id}),
        };
        let Some(obj) = v.as_object_mut() else { return Err("internal: an entry is an object".into()) };
        obj.remove("source");
        obj.insert("id".into(), Value::String(self.id.clone()));
        for (k, val) in &self.fields {
            match (k.as_str(), obj.get_mut("price"), val) {
                ("price", Some(Value::Object(have)), Value::Object(given)) => {
                    for (pk, pv) in given {
                        have.insert(pk.clone(), pv.clone());
                    }
                }
                _ => {
                    obj.insert(k.clone(), val.clone());
                }
            }
        }
        let mut entry: Entry = serde_json::from_value(v).map_err(|e| format!("{}: {e}", self.id))?;
        // A smaller window given alone brings the largest output down with it
        // (the shipped figures take the output up to the window).
        if !self.fields.contains_key("max_output_tokens") {
            if let (Some(w), Some(o)) = (entry.context_window, entry.max_output_tokens) {
                entry.max_output_tokens = Some(o.min(w));
            }
        }
        entry.check()?;
        entry.source = Source::Custom;
        Ok(entry)
    }
}

/// The effective catalog: the shipped entries with the owner's patches over
/// them, by id.
#[derive(Debug, Default)]
pub struct Catalog {
    by_id: HashMap<String, Arc<Entry>>,
}

impl Catalog {
    /// The shipped entries and the owner's `patches` over them. A patch
    /// that no longer makes an entry (a hand edit) is left out, said once.
    pub fn build(shipped: &[Entry], patches: &[Patch]) -> Catalog {
        let mut by_id: HashMap<String, Arc<Entry>> =
            shipped.iter().map(|e| (e.id.clone(), Arc::new(e.clone()))).collect();
        for p in patches {
            match p.over(by_id.get(&p.id).map(|e| &**e)) {
                Ok(e) => {
                    by_id.insert(p.id.clone(), Arc::new(e));
                }
                Err(why) => {
                    log::error!("model catalog: the owner's entry for {:?} is left out ({why})", p.id)
                }
            }
        }
        Catalog { by_id }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Entry>> {
        self.by_id.get(id)
    }

    /// Every entry, by id.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let sorted: BTreeMap<&str, &Arc<Entry>> = self.by_id.iter().map(|(k, v)| (k.as_str(), v)).collect();
        sorted.into_values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// A `MODEL_CATALOG_FILE`: `{"models": [entries]}`, each with its `id`.
pub fn parse_file(text: &str) -> Result<Vec<Value>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        models: Vec<Value>,
    }
    let f: File = serde_json::from_str(text).map_err(|e| format!("expected {{\"models\": [...]}}: {e}"))?;
    Ok(f.models)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shipped_catalog_reads_whole_dated_and_sourced() {
        let (shipped, entries) = shipped();
        assert!(!shipped.date.is_empty() && !shipped.sources.is_empty());
        assert_eq!(entries.len(), shipped.models.len(), "every shipped entry reads");
        assert!(entries.len() >= 20, "{}", entries.len());
        for m in &shipped.models {
            let sources = match &m["source"] {
                Value::Number(n) => vec![n.as_u64().unwrap()],
                Value::Array(a) => a.iter().map(|n| n.as_u64().unwrap()).collect(),
                other => panic!("{}: a source index, not {other}", m["id"]),
            };
            assert!(sources.iter().all(|i| (*i as usize) < shipped.sources.len()), "{}", m["id"]);
        }
    }

    #[test]
    fn an_owners_patch_replaces_the_fields_it_gives_and_merges_prices() {
        let base = Patch { id: "m/x".into(), fields: Map::new() }.over(None).unwrap();
        let base = Entry {
            context_window: Some(131072),
            max_output_tokens: Some(8192),
            price: Price {
                input: Some(Micros(2_000_000)),
                output: Some(Micros(8_000_000)),
                ..Default::default()
            },
            source: Source::Default,
            ..base
        };
        let (patch, e) =
            Patch::parse("m/x", &json!({"context_window": 65536, "price": {"output": 9.5}}), Some(&base))
                .unwrap();
        assert_eq!((e.context_window, e.max_output_tokens), (Some(65536), Some(8192)));
        assert_eq!((e.price.input, e.price.output), (Some(Micros(2_000_000)), Some(Micros(9_500_000))));
        assert_eq!(e.source, Source::Custom);
        let catalog = Catalog::build(std::slice::from_ref(&base), &[patch]);
        assert_eq!(catalog.get("m/x").unwrap().context_window, Some(65536));
        // Null makes a figure unknown; a new id is an entry of its own.
        let (_, e) = Patch::parse("m/x", &json!({"price": {"input": null}}), Some(&base)).unwrap();
        assert_eq!(e.price.input, None);
        let (_, e) =
            Patch::parse("own/model", &json!({"context_window": 32768, "tools": true}), None).unwrap();
        assert_eq!(
            (e.context_window, e.tools, e.input.clone()),
            (Some(32768), Some(true), vec!["text".to_string()])
        );
        // Refused, with the reason.
        for (body, why) in [
            (json!({"context_window": 0}), "1 to"),
            (json!({"context_window": 1000, "max_output_tokens": 2000}), "more than"),
            (json!({"price": {"input": -1}}), "0 to"),
            (json!({"price": {"input": 0.0000001}}), "six decimals"),
            (json!({"price": {"per_token": 1}}), "unknown field"),
            (json!({"windows": 1}), "unknown field"),
            (json!({"input": ["smell"]}), "kinds"),
            (json!({"id": "other"}), "not"),
            (json!([1]), "object"),
        ] {
            let e = Patch::parse("m/x", &body, Some(&base)).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
        assert!(Patch::parse("Qwen/../x", &json!({}), None).unwrap_err().contains("segment"));
    }

    #[test]
    fn prices_are_fixed_point_and_print_as_they_were_written() {
        assert_eq!(Micros::from_cny(2.0), Ok(Micros(2_000_000)));
        assert_eq!(Micros::from_cny(0.0005), Ok(Micros(500)));
        assert_eq!(serde_json::to_string(&Micros(2_000_000)).unwrap(), "2");
        assert_eq!(serde_json::to_string(&Micros(2_500_000)).unwrap(), "2.5");
        assert_eq!(serde_json::to_string(&Micros(1)).unwrap(), "0.000001");
        assert!(Micros::from_cny(f64::NAN).is_err());
    }
}
