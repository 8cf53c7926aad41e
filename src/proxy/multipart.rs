//! Multipart uploads, read with a real parser (multer) for their framing:
//! the fields the proxy needs (`model`, a batch file's `purpose` and `file`)
//! are found in any order, quoted or not, and a file part whose file is
//! named "model" is not taken for the field.
//!
//! A part's name is read from its `Content-Disposition` every way a
//! mainstream parser reads it (`Disposition`): `name`, `name*` in RFC
//! 2231/5987's encoding (`name*=UTF-8''model`), RFC 2231 continuations
//! (`name*0`, `name*1*`), the parameter's name in any case, quoted or not.
//! Parsers differ on which of these wins and on which of two parts of one
//! name they keep (aiohttp, Python's and Go's read `name*`; multer does
//! not), so for a caller held to a model list a field is `Unclear` when any
//! reading of any part makes it ambiguous: named twice, a part read as two
//! names, a file part read as the field, a name in another case, or a name
//! the proxy cannot decode.

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

/// An upload streamed to the upstream for a caller held to a model list:
/// every part's headers are read as they pass, and a part a parser may take
/// for `field` beyond the `allowed` ones (read in the first chunk) stops
/// the upload with `UploadError::Refused`. The upstream then has a body cut
/// before its closing boundary, which no multipart parser takes as a form;
/// the caller gets a 403.
pub struct PartWatch<S> {
    inner: S,
    scan: Option<Scan>,
}

struct Scan {
    /// `\r\n--boundary`
    delimiter: Vec<u8>,
    /// The end of what was read, where a delimiter may begin.
    carry: Vec<u8>,
    /// A part's headers being read (after a delimiter).
    headers: Option<Vec<u8>>,
    field: &'static str,
    seen: usize,
    allowed: usize,
    ended: bool,
}

/// The most header bytes of one part read (more: refused).
const MAX_PART_HEADERS: usize = 16 << 10;

impl Scan {
    fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        loop {
            if self.ended {
                return Ok(());
            }
            match self.headers.as_mut() {
                Some(h) => {
                    h.extend_from_slice(&data);
                    if h.starts_with(b"--") {
                        // The closing delimiter: nothing after it is a part.
                        self.ended = true;
                        return Ok(());
                    }
                    match memchr::memmem::find(h, b"\r\n\r\n") {
                        Some(end) => {
                            data = h.split_off(end + 4);
                            h.truncate(end);
                            let headers = std::mem::take(h);
                            self.headers = None;
                            self.part(&headers)?;
                        }
                        None if h.len() > MAX_PART_HEADERS => {
                            return Err(format!("a part's headers run past {MAX_PART_HEADERS} bytes"))
                        }
                        None => return Ok(()),
                    }
                }
                None => match memchr::memmem::find(&data, &self.delimiter) {
                    Some(at) => {
                        self.headers = Some(Vec::new());
                        data.drain(..at + self.delimiter.len());
                    }
                    None => {
                        let keep = data.len().min(self.delimiter.len() - 1);
                        self.carry = data.split_off(data.len() - keep);
                        return Ok(());
                    }
                },
            }
        }
    }

    fn part(&mut self, headers: &[u8]) -> Result<(), String> {
        if Disposition::of_headers(headers).may_be(self.field) {
            self.seen += 1;
            if self.seen > self.allowed {
                return Err(format!(
                    "this key may use some models only: the upload names `{}` again past its first part (the proxy cannot tell which the upstream takes)",
                    self.field
                ));
            }
        }
        Ok(())
    }
}

impl<S> PartWatch<S> {
    /// Passes `inner` on as it is.
    pub fn open(inner: S) -> Self {
        PartWatch { inner, scan: None }
    }

    /// Watches `inner`, the rest of an upload whose `first` chunk has been
    /// read (and found to name `field` `allowed` times).
    pub fn watching(inner: S, boundary: &str, first: &[u8], field: &'static str, allowed: usize) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        // The body opens with a delimiter that has no line end before it.
        let mut scan =
            Scan { delimiter, carry: b"\r\n".to_vec(), headers: None, field, seen: 0, allowed, ended: false };
        // The first chunk was read by the parser already: counted, not judged.
        let _ = scan.feed(first);
        scan.seen = scan.seen.min(allowed);
        PartWatch { inner, scan: Some(scan) }
    }
}

impl<S> futures_util::Stream for PartWatch<S>
where
    S: futures_util::Stream<Item = Result<Bytes, super::body::UploadError>> + Unpin,
{
    type Item = Result<Bytes, super::body::UploadError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = std::pin::Pin::new(&mut this.inner).poll_next(cx);
        if let (std::task::Poll::Ready(Some(Ok(chunk))), Some(scan)) = (&next, this.scan.as_mut()) {
            if let Err(why) = scan.feed(chunk) {
                this.scan = None;
                return std::task::Poll::Ready(Some(Err(super::body::UploadError::Refused(why))));
            }
        }
        next
    }
}

/// The parts of `body`, framed by multer.
fn parts(body: Bytes, boundary: &str) -> multer::Multipart<'static> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    multer::Multipart::new(stream, boundary)
}

/// What a part's `Content-Disposition` headers say of it, read every way a
/// mainstream parser reads them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Disposition {
    /// Every name a parser may take it for (`name`, `name*`, continuations), once each.
    pub names: Vec<String>,
    /// A name parameter the proxy could not decode (an unknown charset, bad
    /// percent-encoding, a gap in continuations): it may be any name.
    pub unreadable: bool,
    /// It carries a file (`filename`, `filename*`, continuations).
    pub file: bool,
}

impl Disposition {
    /// Reads every `Content-Disposition` value of a part (a part with two
    /// of them is read as both).
    pub fn of<'h>(values: impl IntoIterator<Item = &'h [u8]>) -> Self {
        let mut d = Disposition::default();
        for value in values {
            d.read(&String::from_utf8_lossy(value));
        }
        d
    }

    /// Reads a part's header block (`Name: value` lines).
    pub fn of_headers(headers: &[u8]) -> Self {
        let text = String::from_utf8_lossy(headers);
        Disposition::of(text.split("\r\n").filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case("content-disposition").then_some(value.as_bytes())
        }))
    }

    fn read(&mut self, header: &str) {
        // RFC 2231 continuations: (index, encoded, value) by parameter.
        let mut pieces: Vec<(bool, usize, bool, String)> = Vec::new();
        for (key, value) in params(header) {
            let key = key.to_ascii_lowercase();
            let (base, rest) = match key.split_once('*') {
                Some((b, r)) => (b, Some(r)),
                None => (key.as_str(), None),
            };
            let is_name = match base {
                "name" => true,
                "filename" => {
                    self.file = true;
                    false
                }
                _ => continue,
            };
            match rest {
                None => {
                    if is_name {
                        self.add(value);
                    }
                }
                // `name*`: charset'language'percent-encoded.
                Some("") => {
                    if is_name {
                        match decode_extended(&value) {
                            Some(v) => self.add(v),
                            None => self.unreadable = true,
                        }
                    }
                }
                // `name*0`, `name*1*`, ...
                Some(r) => {
                    let (index, encoded) = match r.strip_suffix('*') {
                        Some(i) => (i, true),
                        None => (r, false),
                    };
                    match index.parse::<usize>() {
                        Ok(i) if i < 64 => pieces.push((is_name, i, encoded, value)),
                        _ => self.unreadable |= is_name,
                    }
                }
            }
        }
        pieces.retain(|p| p.0);
        if pieces.is_empty() {
            return;
        }
        pieces.sort_by_key(|p| p.1);
        let mut joined = Vec::new();
        let mut charset_ok = true;
        for (at, (_, index, encoded, value)) in pieces.iter().enumerate() {
            if *index != at {
                // A gap, or an index given twice.
                self.unreadable = true;
                return;
            }
            if *encoded {
                let text = if at == 0 {
                    match value.splitn(3, '\'').collect::<Vec<_>>()[..] {
                        [charset, _, text] => {
                            charset_ok = known_charset(charset);
                            text
                        }
                        _ => {
                            self.unreadable = true;
                            return;
                        }
                    }
                } else {
                    value.as_str()
                };
                match percent_decode(text) {
                    Some(b) => joined.extend_from_slice(&b),
                    None => {
                        self.unreadable = true;
                        return;
                    }
                }
            } else {
                joined.extend_from_slice(value.as_bytes());
            }
        }
        match String::from_utf8(joined) {
            Ok(v) if charset_ok => self.add(v),
            _ => self.unreadable = true,
        }
    }

    fn add(&mut self, name: String) {
        if !self.names.contains(&name) {
            self.names.push(name);
        }
    }

    /// Whether a parser may take this part for the field `field`: a name
    /// that is it, in any case (some read names ignoring case), or a name
    /// the proxy cannot read.
    pub fn may_be(&self, field: &str) -> bool {
        self.unreadable || self.names.iter().any(|n| n.eq_ignore_ascii_case(field))
    }

    /// Whether every parser takes this part for the field `field` and
    /// nothing else: its one name, exactly.
    pub fn is_only(&self, field: &str) -> bool {
        !self.unreadable && self.names.len() == 1 && self.names[0] == field
    }
}

fn known_charset(charset: &str) -> bool {
    ["utf-8", "us-ascii", ""].iter().any(|c| charset.eq_ignore_ascii_case(c))
}

/// `charset'language'percent-encoded` (RFC 5987), decoded; `None` if it
/// is not that, or in a charset other than UTF-8 or ASCII.
fn decode_extended(value: &str) -> Option<String> {
    let mut it = value.splitn(3, '\'');
    let (charset, _language, text) = (it.next()?, it.next()?, it.next()?);
    if !known_charset(charset) {
        return None;
    }
    String::from_utf8(percent_decode(text)?).ok()
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A part's `Content-Disposition`, read every way (see `Disposition`);
/// `None` without one.
fn named(field: &multer::Field<'_>) -> Option<Disposition> {
    let mut values = field.headers().get_all("content-disposition").iter().map(|v| v.as_bytes()).peekable();
    values.peek()?;
    Some(Disposition::of(values))
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
/// fields before the cut are seen. `Unclear` when any reading of any part
/// makes the field ambiguous (see the module's header).
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
        let Some(d) = named(&field) else { continue };
        if !d.may_be(name) {
            continue;
        }
        if !d.is_only(name) || d.file || found.is_some() {
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
    // One pass: the purpose and the file, each of which must be named once,
    // plainly (which of two the upstream takes cannot be told).
    let mut parts = parts(body, boundary);
    let (mut purposes, mut batch, mut file, mut files, mut problem) = (0, false, None, 0, None);
    loop {
        let mut field = match parts.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            // Unreadable here, it cannot be told whether it is a batch.
            Err(e) => return Some(Err(format!("the upload cannot be read: {e}"))),
        };
        let Some(d) = named(&field) else { continue };
        if d.may_be("purpose") {
            purposes += 1;
            if !d.is_only("purpose") || d.file {
                problem = Some("its `purpose` part is named in a way parsers read differently".to_string());
            }
            match text_value(&mut field).await {
                Some(v) => batch |= v.eq_ignore_ascii_case("batch"),
                None => problem = Some("the upload cannot be read".into()),
            }
        } else if d.file || d.may_be("file") {
            files += 1;
            if !d.is_only("file") {
                problem = Some("its file part is named in a way parsers read differently".to_string());
            }
            match field.bytes().await {
                Ok(b) => file = Some(b),
                Err(e) => problem = Some(format!("the file cannot be read: {e}")),
            }
        }
    }
    if purposes > 1 {
        // Which the upstream takes cannot be told: read as a batch, refused.
        return Some(Err("the upload names `purpose` more than once".into()));
    }
    if !batch && problem.is_none() && files <= 1 {
        return None;
    }
    if files > 1 {
        return Some(Err("the upload holds two files".into()));
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
        match line_model(line) {
            Ok(m) => models.push((i + 1, m)),
            Err(why) => return Some(Err(format!("line {}: {why}", i + 1))),
        }
    }
    Some(Ok(models))
}

/// A batch line's `body.model`, read as the proxy reads a request's: a key
/// that names `body` or `model` in another case is refused, as is either
/// named twice (see `forward::Probe`).
fn line_model(line: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        body: Option<&'a serde_json::value::RawValue>,
    }
    let folded = |key: &str, field: &str| key != field && super::forward::folds_to(key, field);
    let keys = |raw: &[u8]| -> Result<(), String> {
        let map: std::collections::BTreeMap<String, serde::de::IgnoredAny> =
            serde_json::from_slice(raw).map_err(|e| format!("not a JSON object: {e}"))?;
        match map.keys().find(|k| folded(k, "body") || folded(k, "model")) {
            Some(k) => Err(format!("the key {:?} reads as another to decoders that ignore case", k)),
            None => Ok(()),
        }
    };
    keys(line)?;
    let body = serde_json::from_slice::<Line>(line).map_err(|e| format!("not a JSON object: {e}"))?.body;
    let Some(body) = body else { return Err("names no body.model".into()) };
    keys(body.get().as_bytes())?;
    match super::forward::probe(body.get().as_bytes(), true) {
        Ok(p) => Ok(p.model.as_deref().unwrap_or("").to_string()),
        Err(e) => Err(format!("body: {}", e.message)),
    }
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
        let d = Disposition::of_headers(&body[at..head_end]);
        if d.is_only(name) && !d.file {
            {
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
        // Said twice: which one the upstream takes cannot be told.
        assert!(
            matches!(batch_models(file(&["other", "batch"]), "B").await, Some(Err(e)) if e.contains("more than once"))
        );
        assert_eq!(batch_models(file(&["fine-tune"]), "B").await, None);
        assert!(matches!(batch_models(Bytes::from_static(b"--B\r\nbroken"), "B").await, Some(Err(_))));
    }

    /// The readings a mainstream parser makes of a part's name (issue 30's
    /// finding 2): each one the proxy reads too.
    #[test]
    fn a_parts_name_is_read_every_way_parsers_read_it() {
        let d = |h: &str| Disposition::of([h.as_bytes()]);
        assert_eq!(d("form-data; name=\"model\"").names, ["model"]);
        assert_eq!(d("form-data; name*=UTF-8''model").names, ["model"]);
        assert_eq!(d("form-data; NAME*=utf-8'en'mo%64el").names, ["model"]);
        assert_eq!(d("form-data; name*0=\"mo\"; name*1=\"del\"").names, ["model"]);
        assert_eq!(d("form-data; name*0*=UTF-8''mo; name*1*=%64el").names, ["model"]);
        assert_eq!(d("form-data; name=\"file\"; name*=UTF-8''model").names, ["file", "model"]);
        assert!(d("form-data; name=\"model\"; filename=\"\"").file);
        assert!(d("form-data; name=\"model\"; filename*=UTF-8''").file);
        assert!(d("form-data; name*0=a; name*2=b").unreadable, "a gap");
        assert!(d("form-data; name*=ISO-2022-JP''%1B%24B").unreadable, "a charset not read here");
        assert!(d("form-data; name*=UTF-8''%ZZ").unreadable);
        assert!(d("form-data; name*=model").unreadable, "no charset part");
        assert!(d("form-data; name=\"Model\"").may_be("model"), "another case");
        assert!(!d("form-data; name=\"Model\"").is_only("model"));
        assert!(Disposition::of(["form-data; name=a".as_bytes(), "form-data; name=model".as_bytes()])
            .may_be("model"));
    }

    #[actix_rt::test]
    async fn a_second_reading_of_the_model_field_makes_it_unclear() {
        let v = "FunAudioLLM/SenseVoiceSmall";
        let r1 = "deepseek-ai/DeepSeek-R1";
        for second in [
            "form-data; name*=UTF-8''model",
            "form-data; name=\"model\"; filename=\"\"",
            "form-data; name=\"model\"; filename*=UTF-8''",
            "form-data; name=\"MODEL\"",
            "form-data; name*0=mo; name*1=del",
            "form-data; name*=x-weird''model",
        ] {
            let body = form(&[("form-data; name=\"model\"", v), (second, r1)]);
            assert_eq!(text_field(body, "B", "model", true).await, Field::Unclear, "{second}");
        }
        // One part read as two names is unclear too.
        let body = form(&[("form-data; name=\"file\"; name*=UTF-8''model", r1)]);
        assert_eq!(text_field(body, "B", "model", true).await, Field::Unclear);
        // The purpose and the file of a batch, named a second way.
        let line = r#"{"custom_id":"1","body":{"model":"m1"}}"#;
        let purpose2 = form(&[
            ("form-data; name=purpose", "batch"),
            ("form-data; name*=UTF-8''purpose", "other"),
            ("form-data; name=file; filename=a", line),
        ]);
        assert!(matches!(
            futures_util::FutureExt::now_or_never(batch_models(purpose2, "B")),
            Some(Some(Err(_)))
        ));
        let file2 = form(&[
            ("form-data; name=purpose", "batch"),
            ("form-data; name=file; filename=a", line),
            ("form-data; name*=UTF-8''file; filename=b", r#"{"body":{"model":"deepseek-ai/DeepSeek-R1"}}"#),
        ]);
        assert!(matches!(batch_models(file2, "B").await, Some(Err(e)) if e.contains("two files")));
        // A line whose body names its model twice, or in capitals.
        for bad in [
            r#"{"body":{"model":"m1","MODEL":"x"}}"#,
            r#"{"body":{"model":"m1"},"BODY":{"model":"x"}}"#,
            r#"{"body":{"model":"m1","model":"x"}}"#,
        ] {
            let f = form(&[("form-data; name=purpose", "batch"), ("form-data; name=file; filename=a", bad)]);
            assert!(matches!(batch_models(f, "B").await, Some(Err(_))), "{bad}");
        }
    }

    /// A streamed upload's later parts are read as they pass: a second
    /// `model` stops it, at any split of the bytes.
    #[test]
    fn a_streamed_upload_is_stopped_at_a_second_model_part_wherever_its_bytes_are_cut() {
        let audio = vec![b'x'; 5000];
        let mut body = form(&[("form-data; name=model", "FunAudioLLM/SenseVoiceSmall")]).to_vec();
        body.truncate(body.len() - "--B--\r\n".len());
        body.extend_from_slice(b"--B\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\n");
        body.extend_from_slice(&audio);
        let clean_end = body.len();
        body.extend_from_slice(b"\r\n--B\r\nContent-Disposition: form-data; name*=UTF-8''model\r\n\r\ndeepseek-ai/DeepSeek-R1\r\n--B--\r\n");
        for step in [1, 3, 7, 64, 1000, 100_000] {
            let first = &body[..80.min(body.len())];
            let mut scan = PartWatch::watching((), "B", first, "model", 1).scan.unwrap();
            let refused = body[80..].chunks(step).any(|c| scan.feed(c).is_err());
            assert!(refused, "step {step}");
            // The same upload without its second model passes.
            let mut clean = body[..clean_end].to_vec();
            clean.extend_from_slice(b"\r\n--B--\r\n");
            let mut scan = PartWatch::watching((), "B", first, "model", 1).scan.unwrap();
            assert!(clean[80..].chunks(step).all(|c| scan.feed(c).is_ok()), "step {step}");
        }
    }
}
