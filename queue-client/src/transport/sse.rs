//! An incremental Server-Sent Events parser, as the WHATWG HTML standard
//! ("Interpreting an event stream") defines it: it is fed body chunks cut
//! anywhere (inside a line, between a CR and its LF, inside a UTF-8
//! character) and hands back each event once its blank line arrives.
//!
//! Memory is bounded: an event whose lines add up to more than the limit is
//! skipped (its bytes are dropped as they arrive) and reported as
//! [`Parsed::TooLarge`], with its `id` if that came before the limit.

/// The most bytes one event may take (its field lines, without line ends).
pub(crate) const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The `id:` field of this event, if it had one.
    pub(crate) id: Option<String>,
    /// The `event:` field; `message` when absent.
    pub(crate) event: String,
    /// The `data:` lines, joined with `\n`.
    pub(crate) data: String,
}

/// What a chunk completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// An event.
    Frame(Frame),
    /// An event over the limit, skipped.
    TooLarge {
        /// Its `id:` field, when it came before the limit was passed.
        id: Option<String>,
    },
    /// An `id:` with no data: dispatches nothing, but moves the position a
    /// reconnecting client resumes from (as an `EventSource`'s
    /// `lastEventId`).
    Position {
        /// The `id:` field.
        id: String,
    },
}

#[derive(Debug)]
pub(crate) struct SseParser {
    limit: usize,
    /// The line being read (bytes, decoded when it is complete).
    line: Vec<u8>,
    /// Bytes of that line, those dropped over the limit included: a line
    /// is blank only if this is 0.
    line_len: usize,
    /// The last byte seen was a CR: an LF right after it ends no new line.
    after_cr: bool,
    /// Whether the first line (which may start with a byte order mark)
    /// is behind us.
    past_first_line: bool,
    // The event being assembled.
    id: Option<String>,
    event: String,
    data: String,
    has_data: bool,
    /// Bytes of the event so far, to enforce the limit.
    size: usize,
    oversized: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub(crate) fn with_limit(limit: usize) -> SseParser {
        SseParser {
            limit,
            line: Vec::new(),
            line_len: 0,
            after_cr: false,
            past_first_line: false,
            id: None,
            event: String::new(),
            data: String::new(),
            has_data: false,
            size: 0,
            oversized: false,
        }
    }

    /// Feeds one chunk; returns the events it completed, in order.
    pub(crate) fn push(&mut self, mut chunk: &[u8]) -> Vec<Parsed> {
        let mut parsed = Vec::new();
        while let Some((&first, rest)) = chunk.split_first() {
            if self.after_cr {
                self.after_cr = false;
                if first == b'\n' {
                    chunk = rest;
                    continue;
                }
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.append(chunk);
                    break;
                }
                Some(end) => {
                    self.append(&chunk[..end]);
                    self.after_cr = chunk[end] == b'\r';
                    chunk = &chunk[end + 1..];
                    self.end_line(&mut parsed);
                }
            }
        }
        parsed
    }

    fn append(&mut self, bytes: &[u8]) {
        self.line_len += bytes.len();
        self.size = self.size.saturating_add(bytes.len());
        if self.size > self.limit {
            // Drop what is held of this event; skip the rest of it.
            if !self.oversized {
                self.oversized = true;
                self.line = Vec::new();
                self.data = String::new();
            }
        } else if !self.oversized {
            self.line.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, parsed: &mut Vec<Parsed>) {
        let blank = std::mem::replace(&mut self.line_len, 0) == 0;
        let line = std::mem::take(&mut self.line);
        if blank {
            self.dispatch(parsed);
            return;
        }
        if self.oversized {
            return;
        }
        let mut line = String::from_utf8_lossy(&line).into_owned();
        if !self.past_first_line {
            self.past_first_line = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned();
            }
        }
        if line.starts_with(':') {
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match name {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => value.clone_into(&mut self.event),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            // `retry` is the server's reconnection hint: the client keeps
            // its own back-off. Other names are ignored, as the standard says.
            _ => {}
        }
    }

    fn dispatch(&mut self, parsed: &mut Vec<Parsed>) {
        let id = self.id.take();
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        let has_data = std::mem::replace(&mut self.has_data, false);
        let oversized = std::mem::replace(&mut self.oversized, false);
        self.size = 0;
        if oversized {
            parsed.push(Parsed::TooLarge { id });
        } else if has_data {
            let event = if event.is_empty() {
                "message".to_owned()
            } else {
                event
            };
            parsed.push(Parsed::Frame(Frame { id, event, data }));
        } else if let Some(id) = id {
            parsed.push(Parsed::Position { id });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: Option<&str>, event: &str, data: &str) -> Parsed {
        Parsed::Frame(Frame {
            id: id.map(str::to_owned),
            event: event.to_owned(),
            data: data.to_owned(),
        })
    }

    /// A stream with every line ending, a comment, a multi-line event, a
    /// field without a colon, an unknown field, a byte order mark and a
    /// non-ASCII character.
    const STREAM: &[u8] = "\u{feff}: connected\n\nid: 1\nevent: ready\ndata: {\"a\":1}\n\n\
        id: 2\r\nevent: gap\r\ndata: {\"after\":1,\r\ndata:\"oldest\":3}\r\n\r\n\
        : keep-alive\r\rid:3\revent:progress\rdata: é\r\r\
        data\nretry: 10\nfoo: bar\n\n"
        .as_bytes();

    fn expected() -> Vec<Parsed> {
        vec![
            frame(Some("1"), "ready", "{\"a\":1}"),
            frame(Some("2"), "gap", "{\"after\":1,\n\"oldest\":3}"),
            frame(Some("3"), "progress", "é"),
            frame(None, "message", ""),
        ]
    }

    #[test]
    fn a_stream_cut_anywhere_parses_the_same() {
        assert_eq!(SseParser::default().push(STREAM), expected());
        for cut in 0..=STREAM.len() {
            let mut parser = SseParser::default();
            let mut parsed = parser.push(&STREAM[..cut]);
            parsed.extend(parser.push(&STREAM[cut..]));
            assert_eq!(parsed, expected(), "cut at {cut}");
        }
        let mut parser = SseParser::default();
        let byte_by_byte: Vec<Parsed> = STREAM.iter().flat_map(|b| parser.push(&[*b])).collect();
        assert_eq!(byte_by_byte, expected());
    }

    #[test]
    fn an_event_without_its_blank_line_is_not_dispatched() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"id: 1\ndata: x\n").is_empty());
        assert_eq!(parser.push(b"\n"), [frame(Some("1"), "message", "x")]);
        // Comments dispatch nothing; an id alone is a position.
        assert!(parser.push(b": hi\n\n").is_empty());
        assert_eq!(
            parser.push(b"id: 9\n\n"),
            [Parsed::Position { id: "9".to_owned() }]
        );
    }

    #[test]
    fn an_oversized_event_is_skipped_and_the_stream_goes_on() {
        let mut parser = SseParser::with_limit(64);
        let big = format!("id: 7\nevent: completed\ndata: {}\n", "x".repeat(100));
        let mut parsed = Vec::new();
        // In small chunks: nothing of it is kept past the limit.
        for chunk in big.as_bytes().chunks(7) {
            parsed.extend(parser.push(chunk));
            assert!(parser.line.len() <= 64 && parser.data.len() <= 64);
        }
        // More lines of the same event are skipped too.
        parsed.extend(parser.push(b"data: more\n\nid: 8\ndata: small\n\n"));
        assert_eq!(
            parsed,
            [
                Parsed::TooLarge {
                    id: Some("7".to_owned())
                },
                frame(Some("8"), "message", "small"),
            ]
        );
        // A line over the limit with no line end yet holds no more than it.
        let mut parser = SseParser::with_limit(64);
        assert!(parser.push(&[b'a'; 1000]).is_empty());
        assert!(parser.line.capacity() <= 1000 && parser.line.is_empty());
        assert_eq!(parser.push(b"\n\n"), [Parsed::TooLarge { id: None }]);
    }
}
