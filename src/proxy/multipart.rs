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

/// The boundary a request's `multipart/form-data` content type names.
pub fn boundary_of(req: &actix_web::HttpRequest) -> Option<String> {
    let content_type = req.headers().get(actix_web::http::header::CONTENT_TYPE)?.to_str().ok()?;
    multer::parse_boundary(content_type).ok()
}

/// What an upload says of one text field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Named once, with this value.
    Found(String),
    /// Not named (in what was read).
    Missing,
    /// Named twice, or in a part that cannot be read whole: what the
    /// upstream would take cannot be told.
    Unclear,
}

/// The parts of `body`, framed by multer.
fn parts(body: Bytes, boundary: &str) -> multer::Multipart<'static> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    multer::Multipart::new(stream, boundary)
}

/// A part's name and whether it carries a file, from its
/// `Content-Disposition` (bytes beyond ASCII read too: the upstream reads
/// them); `None` without one.
fn named(field: &multer::Field<'_>) -> Option<(Option<String>, bool)> {
    field.headers().get("content-disposition").map(|v| disposition(&String::from_utf8_lossy(v.as_bytes())))
}

/// A text part's value, at most `MAX_TEXT_FIELD` bytes kept; `None` if the
/// body is cut before the part ends.
async fn text_value(field: &mut multer::Field<'_>) -> Option<String> {
    let mut value = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_TEXT_FIELD.saturating_sub(value.len());
                value.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) => return Some(String::from_utf8_lossy(&value).trim().to_string()),
            Err(_) => return None,
        }
    }
}

/// The text field `name` of `body`. With `whole`, `body` is the whole
/// upload; else its first part (an upload that streams on), where only the
/// fields before the cut are seen.
pub async fn text_field(body: Bytes, boundary: &str, name: &str, whole: bool) -> Field {
    let mut parts = parts(body, boundary);
    let mut found = None;
    loop {
        let mut field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            // A whole upload that does not parse to its end is unclear; a
            // first part is cut short by nature: the fields before were read.
            Err(_) if whole => return Field::Unclear,
            Err(_) => break,
        };
        let Some((field_name, file)) = named(&field) else { continue };
        if file || field_name.as_deref().is_none_or(|n| n != name) {
            continue;
        }
        if found.is_some() {
            return Field::Unclear;
        }
        match text_value(&mut field).await {
            Some(v) => found = Some(v),
            // Cut before the field ended: its value is not known.
            None => return Field::Unclear,
        }
    }
    match found {
        Some(v) => Field::Found(v),
        None => Field::Missing,
    }
}

/// The models the lines of a batch input file name: for a whole upload
/// whose `purpose` is `batch`, each line's `body.model` with its line
/// number (from 1); `None` for any other upload. A line that is not a JSON
/// object naming a model, or an upload that cannot be read, is an error
/// that says which.
pub async fn batch_models(body: Bytes, boundary: &str) -> Option<Result<Vec<(usize, String)>, String>> {
    // One pass: the purpose (any `purpose` part saying batch makes it one:
    // which the upstream takes cannot be told) and the file.
    let mut parts = parts(body, boundary);
    let (mut batch, mut file, mut problem) = (false, None, None);
    loop {
        let mut field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            // Unreadable here, it cannot be told whether it is a batch.
            Err(e) => return Some(Err(format!("the upload cannot be read: {e}"))),
        };
        match named(&field) {
            Some((Some(n), false)) if n == "purpose" => match text_value(&mut field).await {
                Some(v) => batch |= v.eq_ignore_ascii_case("batch"),
                None => problem = Some("the upload cannot be read".into()),
            },
            Some((Some(n), true)) if n == "file" => {
                if file.is_some() {
                    problem = Some("the upload holds two files".into());
                }
                match field.bytes().await {
                    Ok(b) => file = Some(b),
                    Err(e) => problem = Some(format!("the file cannot be read: {e}")),
                }
            }
            _ => {}
        }
    }
    if !batch {
        return None;
    }
    if let Some(why) = problem {
        return Some(Err(why));
    }
    let Some(file) = file else { return Some(Err("the upload holds no file".into())) };
    let mut models = Vec::new();
    for (i, line) in file.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let model = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.pointer("/body/model").and_then(|m| m.as_str()).map(str::to_string));
        match model {
            Some(m) => models.push((i + 1, m)),
            None => return Some(Err(format!("line {} names no body.model", i + 1))),
        }
    }
    Some(Ok(models))
}

/// Where the (trimmed) value of the text field `name` stands in a whole
/// multipart body, found as `text_field` finds it (the same reading of each
/// part's `Content-Disposition`): for an alias to rename it in place.
pub fn field_range(body: &[u8], name: &str) -> Option<std::ops::Range<usize>> {
    // The boundary line opens the body: `--BOUNDARY\r\n`.
    let first_line = memchr::memmem::find(body, b"\r\n")?;
    let delimiter = [b"\r\n", &body[..first_line]].concat();
    if !delimiter[2..].starts_with(b"--") {
        return None;
    }
    let mut at = first_line + 2;
    loop {
        let head_end = at + memchr::memmem::find(&body[at..], b"\r\n\r\n")?;
        let value_start = head_end + 4;
        let value_end = value_start + memchr::memmem::find(&body[value_start..], &delimiter)?;
        let headers = String::from_utf8_lossy(&body[at..head_end]);
        let named = headers.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case("content-disposition").then(|| disposition(value))
        });
        if let Some((Some(field), false)) = named {
            if field == name {
                let value = &body[value_start..value_end];
                let lead = value.iter().take_while(|b| b.is_ascii_whitespace()).count();
                let trail = value[lead..].iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
                return Some(value_start + lead..value_end - trail);
            }
        }
        // Past the delimiter and its line end (or `--`, the last).
        at = value_end + delimiter.len() + 2;
        if at >= body.len() {
            return None;
        }
    }
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
        match text_field(form(parts), "B", "model", true).await {
            Field::Found(v) => Some(v),
            _ => None,
        }
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
        // Bytes beyond ASCII in the header do not hide the field.
        assert_eq!(model(&[("form-data; name=\"model\"; x=\"é\"", v)]).await, want);
        // Named twice: which one the upstream takes cannot be told.
        let twice = form(&[("form-data; name=model", v), ("form-data; name=model", "Qwen/Qwen3-8B")]);
        assert_eq!(text_field(twice, "B", "model", true).await, Field::Unclear);
        // Not multipart, or another boundary: unclear as a whole; nothing seen in a first part.
        assert_eq!(
            text_field(Bytes::from_static(b"{\"model\":\"x\"}"), "B", "model", true).await,
            Field::Unclear
        );
        assert_eq!(
            text_field(form(&[("form-data; name=model", v)]), "C", "model", false).await,
            Field::Missing
        );
        // A first part: the fields before the cut are read; one cut through is unclear.
        let whole = form(&[("form-data; name=model", v), ("form-data; name=file; filename=a", "RIFF")]);
        assert_eq!(text_field(whole.slice(..90), "B", "model", false).await, Field::Found(v.into()));
        assert_eq!(text_field(whole.slice(..60), "B", "model", false).await, Field::Unclear);
        assert_eq!(text_field(whole.clone(), "B", "model", true).await, Field::Found(v.into()));
        // Where the value stands, as the parser reads it: a file named "model" first is skipped.
        let body =
            form(&[("form-data; name=\"file\"; filename=\"model\"", "Qwen/x"), ("form-data; NAME=model", v)]);
        let at = field_range(&body, "model").unwrap();
        assert_eq!(&body[at], v.as_bytes());
        assert_eq!(
            field_range(&form(&[("form-data; name=\"file\"; filename=\"model\"", "x")]), "model"),
            None
        );
        assert_eq!(field_range(b"garbage", "model"), None);
        assert_eq!(params("form-data; name=\"a\\\"b\"; x"), vec![("name".into(), "a\"b".into())]);
    }

    #[actix_rt::test]
    async fn a_batch_file_is_read_whatever_else_the_upload_says_of_its_purpose() {
        let line = r#"{"custom_id":"1","body":{"model":"m1"}}"#;
        let file = |purposes: &[&str]| {
            let mut out = String::new();
            for p in purposes {
                out.push_str(&format!("--B\r\nContent-Disposition: form-data; name=purpose\r\n\r\n{p}\r\n"));
            }
            out.push_str(&format!("--B\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\n{line}\n\n{line}\r\n--B--\r\n"));
            Bytes::from(out)
        };
        let want = Some(Ok(vec![(1, "m1".to_string()), (3, "m1".to_string())]));
        assert_eq!(batch_models(file(&["batch"]), "B").await, want);
        // Said twice, batch once: which one the upstream takes cannot be told.
        assert_eq!(batch_models(file(&["other", "batch"]), "B").await, want);
        assert_eq!(batch_models(file(&["fine-tune"]), "B").await, None);
        assert!(matches!(batch_models(Bytes::from_static(b"--B\r\nbroken"), "B").await, Some(Err(_))));
    }
}
