//! Writing JSON by hand, for the translations on the request path. Text is
//! carried as it came, escaped: a string read from the caller's or the
//! upstream's JSON is copied into the answer between its quotes, never
//! unescaped and escaped again, so a translation costs about a copy.

use std::borrow::Cow;

use serde_json::value::RawValue;

/// The escaped contents of a JSON string (what is between its quotes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Escaped<'a>(pub Cow<'a, str>);

impl<'a> Escaped<'a> {
    /// A JSON string literal's contents; `None` for anything else (null, a number).
    pub fn of(raw: &'a RawValue) -> Option<Self> {
        Self::of_str(raw.get())
    }

    pub fn of_str(literal: &'a str) -> Option<Self> {
        contents(literal).map(|inner| Escaped(Cow::Borrowed(inner)))
    }

    /// Plain text, escaped.
    pub fn text(s: &str) -> Escaped<'static> {
        let quoted = serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        Escaped(Cow::Owned(quoted[1..quoted.len() - 1].to_string()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The texts of `parts` joined by `sep` (plain text, escaped here).
    pub fn join(parts: &[Escaped<'a>], sep: &str) -> Escaped<'a> {
        match parts {
            [] => Escaped::default(),
            [one] => one.clone(),
            _ => {
                let sep = Escaped::text(sep);
                let mut s = String::with_capacity(parts.iter().map(|p| p.0.len() + sep.0.len()).sum());
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        s.push_str(&sep.0);
                    }
                    s.push_str(&p.0);
                }
                Escaped(Cow::Owned(s))
            }
        }
    }

    /// The text itself (for the rare step that must read it).
    pub fn unescape(&self) -> Option<String> {
        serde_json::from_str(&format!("\"{}\"", self.0)).ok()
    }

    pub fn into_owned(self) -> Escaped<'static> {
        Escaped(Cow::Owned(self.0.into_owned()))
    }
}

/// What is between the quotes of a JSON string literal (escaped as written);
/// `None` for any other value.
pub fn contents(literal: &str) -> Option<&str> {
    literal.strip_prefix('"')?.strip_suffix('"')
}

/// A string read from JSON, borrowed from the input when it had no escapes
/// (then it is also its escaped form). serde's own `Cow<str>` borrows only
/// as a field of its own, never inside an `Option`: this one does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Str<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(Str)
    }
}

pub fn raw(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
}

/// `"escaped"`.
pub fn string(out: &mut Vec<u8>, e: &str) {
    out.push(b'"');
    out.extend_from_slice(e.as_bytes());
    out.push(b'"');
}

/// Plain text as a JSON string.
pub fn plain(out: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// `,"key":` (keys are the writer's own, never escaped).
pub fn key(out: &mut Vec<u8>, k: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `,"key":"escaped"`.
pub fn field(out: &mut Vec<u8>, k: &str, e: &str) {
    key(out, k);
    string(out, e);
}

/// `,"key":n`.
pub fn number(out: &mut Vec<u8>, k: &str, n: u64) {
    key(out, k);
    uint(out, n);
}

pub fn uint(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub fn int(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    uint(out, n.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_borrow_inside_options_and_keep_their_escaped_form() {
        #[derive(serde::Deserialize)]
        struct T<'a> {
            #[serde(borrow)]
            a: Option<Str<'a>>,
            #[serde(borrow)]
            b: Option<Str<'a>>,
        }
        let t: T = serde_json::from_str(r#"{"a":"plain","b":"with \"quote\""}"#).unwrap();
        assert!(matches!(t.a.as_ref().unwrap().0, Cow::Borrowed("plain")));
        let b = t.b.unwrap();
        assert!(matches!(b.0, Cow::Owned(_)), "unescaped, so owned");
        assert_eq!(&*b, "with \"quote\"");
    }

    #[test]
    fn escaped_text_is_copied_and_joined_without_a_round_trip() {
        let literal: Box<RawValue> = serde_json::from_str(r#""a \"b\"\nc""#).unwrap();
        let e = Escaped::of(&literal).unwrap();
        assert_eq!(e.as_str(), r#"a \"b\"\nc"#);
        assert_eq!(e.unescape().as_deref(), Some("a \"b\"\nc"));
        assert!(Escaped::of_str("null").is_none() && Escaped::of_str("12").is_none());
        let joined = Escaped::join(&[e.clone(), Escaped::text("d\te")], "\n\n");
        assert_eq!(joined.unescape().as_deref(), Some("a \"b\"\nc\n\nd\te"));
        let mut out = Vec::new();
        out.push(b'{');
        raw(&mut out, "\"a\":1");
        field(&mut out, "t", joined.as_str());
        number(&mut out, "n", 0);
        number(&mut out, "m", u64::MAX);
        key(&mut out, "i");
        int(&mut out, -42);
        key(&mut out, "p");
        plain(&mut out, "x\"y");
        out.push(b'}');
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["t"], "a \"b\"\nc\n\nd\te");
        assert_eq!((v["n"].as_u64(), v["m"].as_u64(), v["i"].as_i64()), (Some(0), Some(u64::MAX), Some(-42)));
        assert_eq!(v["p"], "x\"y");
    }
}
