//! Multipart uploads, read with a real parser (multer) for their framing:
//! the fields the proxy needs (`model`) are found in any order, quoted or
//! not, and a file part whose file is named "model" is not taken for the
//! field. The field's name is read from its `Content-Disposition` header
//! here, ignoring the case of the parameter's name (`NAME="model"`), as the
//! upstream reads it (multer matches `name` in lower case only).

use bytes::Bytes;

/// The longest text field value read (a model name is at most 256 bytes;
/// one byte more lets the check refuse a longer one).
const MAX_TEXT_FIELD: usize = 4096;

/// The boundary a `multipart/form-data` content type names.
pub fn boundary(content_type: &str) -> Option<String> {
    multer::parse_boundary(content_type).ok()
}

/// The value of the first text field named `name` in `body` (the whole
/// upload, or its first part: fields after it are not seen). `None` if
/// there is none, or the body is not multipart with this boundary.
pub async fn text_field(body: Bytes, boundary: &str, name: &str) -> Option<String> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut parts = multer::Multipart::new(stream, boundary);
    // (An upload cut short ends in an error: the fields before it were read.)
    while let Ok(Some(mut field)) = parts.next_field().await {
        let Some((field_name, file)) =
            field.headers().get("content-disposition").and_then(|v| v.to_str().ok()).map(disposition)
        else {
            continue;
        };
        if file || field_name.as_deref().is_none_or(|n| n != name) {
            continue;
        }
        let mut value = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_TEXT_FIELD.saturating_sub(value.len());
                    value.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if value.len() >= MAX_TEXT_FIELD {
                        break;
                    }
                }
                Ok(None) => break,
                // Cut before the field ended: its value is not known.
                Err(_) => return None,
            }
        }
        return Some(String::from_utf8_lossy(&value).trim().to_string());
    }
    None
}

/// A part's `Content-Disposition`: its `name` (quoted or not, the
/// parameter's name in any case) and whether it carries a file.
fn disposition(header: &str) -> (Option<String>, bool) {
    let mut name = None;
    let mut file = false;
    for param in params(header) {
        let (key, value) = param;
        if key.eq_ignore_ascii_case("name") && name.is_none() {
            name = Some(value);
        } else if key.eq_ignore_ascii_case("filename") || key.eq_ignore_ascii_case("filename*") {
            file = true;
        }
    }
    (name, file)
}

/// `form-data; a=1; b="x;y"` as (key, value) pairs, quotes and escapes undone.
fn params(header: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let bytes = header.as_bytes();
    let mut i = match memchr::memchr(b';', bytes) {
        Some(at) => at + 1,
        None => return out,
    };
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b';') {
            i += 1;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b';' {
            i += 1;
        }
        let key = header[key_start..i].trim().to_string();
        if i >= bytes.len() || bytes[i] == b';' {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let ch_len = header[i..].chars().next().map_or(1, char::len_utf8);
                value.push_str(&header[i..i + ch_len]);
                i += ch_len;
            }
            i += 1;
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b';' {
                i += 1;
            }
            value = header[start..i].trim().to_string();
        }
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, &str)]) -> Bytes {
        let mut out = String::new();
        for (disposition, value) in parts {
            out.push_str(&format!("--B\r\nContent-Disposition: {disposition}\r\n\r\n{value}\r\n"));
        }
        out.push_str("--B--\r\n");
        Bytes::from(out)
    }

    async fn model(parts: &[(&str, &str)]) -> Option<String> {
        text_field(form(parts), "B", "model").await
    }

    #[actix_rt::test]
    async fn the_model_field_is_found_as_the_upstream_finds_it() {
        let want = Some("FunAudioLLM/SenseVoiceSmall".to_string());
        let v = "FunAudioLLM/SenseVoiceSmall";
        assert_eq!(model(&[("form-data; name=\"model\"", v)]).await, want);
        assert_eq!(model(&[("form-data; name=model", v)]).await, want, "unquoted");
        assert_eq!(model(&[("form-data; NAME=\"model\"", v)]).await, want, "the parameter in capitals");
        assert_eq!(model(&[("form-data; Name = \"model\" ", v)]).await, want);
        // A file named "model" placed first is a file, not the field.
        let parts =
            [("form-data; name=\"file\"; filename=\"model\"", "RIFF...."), ("form-data; name=\"model\"", v)];
        assert_eq!(model(&parts).await, want);
        assert_eq!(model(&[("form-data; name=\"file\"; filename=\"model\"", "x")]).await, None);
        // After other fields, in any order.
        let parts = [("form-data; name=\"purpose\"", "batch"), ("form-data; name=\"model\"", v)];
        assert_eq!(model(&parts).await, want);
        // Not multipart, or another boundary: nothing.
        assert_eq!(text_field(Bytes::from_static(b"{\"model\":\"x\"}"), "B", "model").await, None);
        assert_eq!(text_field(form(&[("form-data; name=model", v)]), "C", "model").await, None);
        // Cut short: the fields before the cut are read; one cut through is not.
        let whole = form(&[("form-data; name=model", v), ("form-data; name=file; filename=a", "RIFF")]);
        assert_eq!(text_field(whole.slice(..90), "B", "model").await, want);
        assert_eq!(text_field(whole.slice(..60), "B", "model").await, None);
        assert_eq!(params("form-data; name=\"a\\\"b\"; x"), vec![("name".into(), "a\"b".into())]);
    }
}
