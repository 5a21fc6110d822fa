//! A Server-Sent Events reader for the fan-out subscribers, without a
//! socket: the response head, the chunked transfer coding, and the SSE
//! frames (`id:`, `event:`, `data:` lines up to a blank line; comments
//! start with `:`).
//!
//! Each piece works on bytes as they arrive, split anywhere, so each is
//! unit-tested with its input split at every byte.

use anyhow::{Context, bail, ensure};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest chunk-size line accepted (size and extensions).
const MAX_SIZE_LINE: usize = 1024;
/// Largest SSE frame accepted (the server's are a few hundred bytes).
const MAX_FRAME: usize = 1024 * 1024;

/// The facts of an event-stream response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHead {
    /// Bytes of the head, blank line included.
    pub head_len: usize,
    /// Whether the body is in the chunked transfer coding (else it runs
    /// until the connection closes).
    pub chunked: bool,
}

/// Parses the head of an event-stream response at the start of `buf`:
/// `Ok(None)` until its blank line has arrived.
///
/// # Errors
/// A status other than 200, a content type other than
/// `text/event-stream`, a `Content-Length` body, a transfer coding other
/// than chunked, or a malformed or over-long head.
pub fn parse_stream_head(buf: &[u8]) -> anyhow::Result<Option<StreamHead>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        ensure!(
            buf.len() <= MAX_HEAD,
            "response head longer than {MAX_HEAD} bytes"
        );
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("malformed status line {status_line:?}"))?;
    let mut chunked = false;
    let mut event_stream = false;
    let mut headers = Vec::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("malformed header line {line:?}");
        };
        let value = value.trim();
        headers.push(format!("{name}: {value}"));
        if name.eq_ignore_ascii_case("transfer-encoding") {
            ensure!(
                value.eq_ignore_ascii_case("chunked"),
                "Transfer-Encoding {value:?} is not supported (only chunked)"
            );
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            bail!("an event stream with a Content-Length ({value}) is not a stream");
        } else if name.eq_ignore_ascii_case("content-type") {
            event_stream = value
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"));
        }
    }
    ensure!(
        status == 200,
        "GET /v1/events answered {status} (expected 200): {}",
        headers.join("; ")
    );
    ensure!(
        event_stream,
        "GET /v1/events answered without Content-Type: text/event-stream: {}",
        headers.join("; ")
    );
    Ok(Some(StreamHead {
        head_len: end + 4,
        chunked,
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// This many data bytes of the current chunk are still to come.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The last chunk (size 0) has been read.
    Done,
}

/// Decodes the chunked transfer coding (RFC 9112 §7.1) incrementally.
#[derive(Debug)]
pub struct Dechunker {
    state: ChunkState,
    /// Bytes of a size line or CRLF not complete yet.
    pending: Vec<u8>,
}

impl Default for Dechunker {
    fn default() -> Self {
        Dechunker {
            state: ChunkState::Size,
            pending: Vec::new(),
        }
    }
}

impl Dechunker {
    /// Whether the last chunk has arrived: the stream has ended.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending the body bytes to `out`.
    ///
    /// # Errors
    /// A malformed size line or chunk end.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<()> {
        while !input.is_empty() {
            match self.state {
                ChunkState::Done => return Ok(()),
                ChunkState::Data(left) => {
                    let take = left.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::DataEnd => {
                    let need = 2 - self.pending.len();
                    let take = need.min(input.len());
                    self.pending.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.pending.len() == 2 {
                        ensure!(
                            self.pending == b"\r\n",
                            "a chunk's data is not followed by CRLF"
                        );
                        self.pending.clear();
                        self.state = ChunkState::Size;
                    }
                }
                ChunkState::Size => {
                    let (line, rest) = match input.iter().position(|&b| b == b'\n') {
                        Some(at) => (&input[..=at], &input[at + 1..]),
                        None => {
                            self.pending.extend_from_slice(input);
                            ensure!(
                                self.pending.len() <= MAX_SIZE_LINE,
                                "chunk-size line longer than {MAX_SIZE_LINE} bytes"
                            );
                            return Ok(());
                        }
                    };
                    self.pending.extend_from_slice(line);
                    input = rest;
                    let text = std::str::from_utf8(&self.pending)
                        .context("chunk-size line is not UTF-8")?;
                    let text = text.strip_suffix("\r\n").with_context(|| {
                        format!("chunk-size line {text:?} does not end in CRLF")
                    })?;
                    let size = text.split(';').next().unwrap_or_default().trim();
                    let size = usize::from_str_radix(size, 16)
                        .with_context(|| format!("malformed chunk size {size:?}"))?;
                    self.pending.clear();
                    // The last chunk: trailers, if any, are not read.
                    self.state = if size == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Data(size)
                    };
                }
            }
        }
        Ok(())
    }
}

/// One SSE frame, its fields as sent (none interpreted but `id`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    /// The `id:` field.
    pub id: Option<String>,
    /// The `event:` field.
    pub event: Option<String>,
    /// The `data:` lines, joined by `\n`.
    pub data: Option<String>,
    /// The comment lines (without their `:`), e.g. `connected`,
    /// `keep-alive`.
    pub comments: Vec<String>,
}

/// Splits an SSE text stream into frames as its bytes arrive.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as frames (dropped when the
    /// buffer runs dry, so that a read of many frames costs one move).
    consumed: usize,
    /// Where the search for the next blank line resumes.
    scanned: usize,
}

impl FrameReader {
    /// The byte buffer decoded body bytes are appended to.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// The next complete frame, if one is in; frames with nothing in
    /// them (a lone blank line) are skipped.
    ///
    /// # Errors
    /// A frame over [`MAX_FRAME`] or not UTF-8.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            // The server ends lines with LF; CRLF is accepted too. A
            // separator may straddle what was scanned and what is new.
            let start = self.scanned.saturating_sub(2).max(self.consumed);
            let Some((at, sep)) = blank_line(&self.buf[start..]) else {
                self.buf.drain(..self.consumed);
                self.consumed = 0;
                self.scanned = self.buf.len();
                ensure!(
                    self.buf.len() <= MAX_FRAME,
                    "an SSE frame longer than {MAX_FRAME} bytes"
                );
                return Ok(None);
            };
            let at = start + at;
            let frame = parse_frame(&self.buf[self.consumed..=at])?;
            self.consumed = at + sep;
            self.scanned = self.consumed;
            if frame != Frame::default() {
                return Ok(Some(frame));
            }
        }
    }
}

/// The first line end followed by an empty line in `bytes`: its offset and
/// the length of the separator (`\n\n` or `\n\r\n`).
fn blank_line(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(at) = bytes[from..].iter().position(|&b| b == b'\n') {
        let at = from + at;
        match bytes.get(at + 1) {
            Some(b'\n') => return Some((at, 2)),
            Some(b'\r') if bytes.get(at + 2) == Some(&b'\n') => return Some((at, 3)),
            Some(b'\r') | None => {
                if bytes.len() <= at + 2 {
                    return None;
                }
            }
            Some(_) => {}
        }
        from = at + 1;
    }
    None
}

/// The fields of one frame's lines.
fn parse_frame(bytes: &[u8]) -> anyhow::Result<Frame> {
    let text = std::str::from_utf8(bytes).context("an SSE frame is not UTF-8")?;
    let mut frame = Frame::default();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            frame.comments.push(comment.trim_start().to_owned());
            continue;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match name {
            "id" => frame.id = Some(value.to_owned()),
            "event" => frame.event = Some(value.to_owned()),
            "data" => match &mut frame.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => frame.data = Some(value.to_owned()),
            },
            // `retry` and unknown fields mean nothing here.
            _ => {}
        }
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
        cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

    fn chunked(parts: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(format!("{:X}\r\n{part}\r\n", part.len()).as_bytes());
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    }

    #[test]
    fn the_head_of_an_event_stream() {
        let head = parse_stream_head(HEAD).unwrap().unwrap();
        assert_eq!(head.head_len, HEAD.len());
        assert!(head.chunked);
        assert!(
            parse_stream_head(&HEAD[..HEAD.len() - 1])
                .unwrap()
                .is_none()
        );
        for bad in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(
                parse_stream_head(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let plain = parse_stream_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(!plain.chunked);
    }

    #[test]
    fn chunks_split_at_every_byte_decode_to_the_body() {
        let body = chunked(&[
            ": connected\nid: 7\n\n",
            "id: 8\nevent: ready\ndata: {}\n\n",
        ]);
        let want = ": connected\nid: 7\n\nid: 8\nevent: ready\ndata: {}\n\n";
        for size in 1..=body.len() {
            let mut decoder = Dechunker::default();
            let mut out = Vec::new();
            for piece in body.chunks(size) {
                decoder.feed(piece, &mut out).unwrap();
            }
            assert_eq!(String::from_utf8(out).unwrap(), want, "pieces of {size}");
            assert!(decoder.done());
        }
        // Extensions are ignored; sizes are hex.
        let mut decoder = Dechunker::default();
        let mut out = Vec::new();
        let long = "x".repeat(26);
        decoder
            .feed(format!("1a;name=value\r\n{long}\r\n").as_bytes(), &mut out)
            .unwrap();
        assert_eq!(out.len(), 26);
        assert!(!decoder.done());
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [&b"zz\r\nab\r\n"[..], b"2\r\nabXY", b"2\nab\r\n"] {
            let mut decoder = Dechunker::default();
            assert!(
                decoder.feed(bad, &mut Vec::new()).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn frames_split_at_every_byte() {
        let text = ": connected\nid: 7\n\n: keep-alive\n\n\
            id: 8\nevent: ready\ndata: {\"event_id\":8}\n\n\
            id: 9\r\nevent: gap\r\ndata: a\r\ndata: b\r\n\r\n";
        for size in 1..=text.len() {
            let mut reader = FrameReader::default();
            let mut frames = Vec::new();
            for piece in text.as_bytes().chunks(size) {
                reader.buffer().extend_from_slice(piece);
                while let Some(frame) = reader.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), 4, "pieces of {size}");
            assert_eq!(frames[0].comments, vec!["connected".to_owned()]);
            assert_eq!(frames[0].id.as_deref(), Some("7"));
            assert_eq!(frames[0].event, None);
            assert_eq!(frames[1].comments, vec!["keep-alive".to_owned()]);
            assert_eq!(frames[2].id.as_deref(), Some("8"));
            assert_eq!(frames[2].event.as_deref(), Some("ready"));
            assert_eq!(frames[2].data.as_deref(), Some("{\"event_id\":8}"));
            assert_eq!(frames[3].event.as_deref(), Some("gap"));
            assert_eq!(frames[3].data.as_deref(), Some("a\nb"));
        }
    }
}
