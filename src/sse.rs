//! Server-sent events, cut into lines as they arrive: a chunk may end in the
//! middle of a line (or of a UTF-8 character); the rest waits for the next.
//! Pure code: the usage meter and the dialect translators read upstream
//! streams with it.

/// A line longer than this is dropped rather than buffered without end.
pub const LINE_CAP: usize = 8 << 20;

#[derive(Debug)]
pub struct Lines {
    partial: Vec<u8>,
    skipping: bool,
    cap: usize,
}

impl Default for Lines {
    fn default() -> Self {
        Lines::with_cap(LINE_CAP)
    }
}

impl Lines {
    /// Lines longer than `cap` are dropped.
    pub fn with_cap(cap: usize) -> Self {
        Lines { partial: Vec::new(), skipping: false, cap }
    }

    /// Calls `each` with every line `chunk` completes, without its `\n` or
    /// `\r\n`.
    pub fn feed(&mut self, mut chunk: &[u8], mut each: impl FnMut(&[u8])) {
        while let Some(nl) = memchr::memchr(b'\n', chunk) {
            let (head, rest) = chunk.split_at(nl);
            if !self.skipping {
                if self.partial.is_empty() {
                    each(trim_cr(head));
                } else {
                    self.partial.extend_from_slice(head);
                    each(trim_cr(&self.partial));
                }
            }
            self.partial.clear();
            self.skipping = false;
            chunk = &rest[1..];
        }
        if !self.skipping {
            if self.partial.len() + chunk.len() > self.cap {
                self.partial.clear();
                self.skipping = true;
            } else {
                self.partial.extend_from_slice(chunk);
            }
        }
    }

    /// The line begun but not ended yet (a stream's last, without its newline).
    pub fn partial(&self) -> Option<&[u8]> {
        (!self.skipping && !self.partial.is_empty()).then_some(trim_cr(&self.partial))
    }

    /// `partial`, taken.
    pub fn rest(&mut self) -> Option<Vec<u8>> {
        let line = self.partial().map(<[u8]>::to_vec);
        self.partial.clear();
        line
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The payload of a `data:` line (one optional space after the colon).
pub fn data(line: &[u8]) -> Option<&[u8]> {
    let rest = line.strip_prefix(b"data:")?;
    Some(rest.strip_prefix(b" ").unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_whole_at_any_split() {
        let text = b"data: {\"a\":1}\r\n\r\nevent: x\ndata: [DONE]\n\n";
        for step in 1..text.len() {
            let mut lines = Lines::default();
            let mut seen = Vec::new();
            for chunk in text.chunks(step) {
                lines.feed(chunk, |l| seen.push(l.to_vec()));
            }
            let want: Vec<&[u8]> = vec![b"data: {\"a\":1}", b"", b"event: x", b"data: [DONE]", b""];
            assert_eq!(seen, want, "step {step}");
            assert!(lines.rest().is_none());
        }
        let mut lines = Lines::default();
        lines.feed(b"data: tail", |_| panic!("no whole line yet"));
        assert_eq!(lines.partial(), Some(&b"data: tail"[..]));
        assert_eq!(lines.rest().as_deref(), Some(&b"data: tail"[..]));
        assert_eq!(lines.partial(), None, "taken");
        // A line over the cap is dropped whole, and the next one read.
        let mut lines = Lines::with_cap(8);
        let mut seen = Vec::new();
        lines.feed(b"data: 0123", |l| seen.push(l.to_vec()));
        lines.feed(b"456789\nok\n", |l| seen.push(l.to_vec()));
        assert_eq!(seen, vec![b"ok".to_vec()]);
        assert_eq!(data(b"data: x"), Some(&b"x"[..]));
        assert_eq!(data(b"data:x"), Some(&b"x"[..]));
        assert_eq!(data(b"event: x"), None);
    }
}
