//! A minimal HTTP/1.1 client for the load generator: one persistent
//! keep-alive connection, one request at a time; [`Connection`] on tokio,
//! [`BlockingConnection`] on a `std` socket for one OS thread.
//!
//! A request is written in one `write_all` (head and body in one buffer,
//! with `Content-Length`); the response is read into a buffer that is reused
//! for the life of the connection until its head (status line and headers,
//! up to the blank line) is in, then until exactly `Content-Length` body bytes
//! are. The body is handed out as a slice of that buffer, so a response costs
//! no allocation. Chunked responses are refused: the servers measured send
//! `Content-Length`, and framing is all this client does.
//!
//! [`parse_head`] and [`ResponseBuffer`] do the framing without a socket, so
//! they are unit-tested with responses split at every byte.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;

/// The framing facts of a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Bytes of the head, including the blank line that ends it.
    pub head_len: usize,
    /// Bytes of the body.
    pub content_length: usize,
    /// Whether the server said it will close the connection.
    pub close: bool,
}

impl Head {
    /// Bytes of the whole response.
    pub fn total_len(&self) -> usize {
        self.head_len + self.content_length
    }
}

/// Parses the response head at the start of `buf`: `Ok(None)` when the blank
/// line that ends it has not arrived yet.
///
/// # Errors
/// A malformed status line or header, a head over [`MAX_HEAD`], a chunked
/// (or otherwise transfer-encoded) body, or a body of unknown length.
pub fn parse_head(buf: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        ensure!(
            buf.len() <= MAX_HEAD,
            "response head longer than {MAX_HEAD} bytes"
        );
        return Ok(None);
    };
    let head_len = end + 4;
    ensure!(
        head_len <= MAX_HEAD,
        "response head longer than {MAX_HEAD} bytes"
    );
    let text = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = parse_status_line(status_line)
        .with_context(|| format!("malformed status line {status_line:?}"))?;
    let mut content_length = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            bail!("malformed header line {line:?}");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value
                .parse()
                .with_context(|| format!("malformed Content-Length {value:?}"))?;
            ensure!(
                content_length.is_none_or(|seen| seen == length),
                "conflicting Content-Length headers"
            );
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("Transfer-Encoding {value:?} is not supported (only Content-Length bodies)");
        } else if name.eq_ignore_ascii_case("connection") {
            close |= value
                .split(',')
                .any(|token| token.trim().eq_ignore_ascii_case("close"));
        }
    }
    let content_length = match content_length {
        Some(length) => length,
        // No body by definition (RFC 9112 §6.3).
        None if status < 200 || status == 204 || status == 304 => 0,
        None => bail!("status {status} response without Content-Length"),
    };
    Ok(Some(Head {
        status,
        head_len,
        content_length,
        close,
    }))
}

/// `HTTP/1.x NNN[ reason]` → NNN.
fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit())
        || !matches!(rest.as_bytes().get(3), None | Some(b' '))
    {
        return None;
    }
    code.parse().ok().filter(|c| (100..=999).contains(c))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The bytes read from a connection: the current response, and whatever
/// followed it.
#[derive(Debug, Default)]
pub struct ResponseBuffer {
    buf: Vec<u8>,
    /// Bytes of the previous response, dropped when the next one starts.
    consumed: usize,
    /// The current response's head, once parsed.
    head: Option<Head>,
}

impl ResponseBuffer {
    /// An empty buffer with room for typical responses.
    pub fn new() -> ResponseBuffer {
        ResponseBuffer {
            buf: Vec::with_capacity(16 * 1024),
            consumed: 0,
            head: None,
        }
    }

    /// Drops the previous response; bytes after it are kept for the next.
    pub fn start(&mut self) {
        self.buf.drain(..self.consumed);
        self.consumed = 0;
        self.head = None;
    }

    /// Appends bytes read from the connection.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Starts the next response ([`Self::start`]), which must not have
    /// begun to arrive before its request was sent.
    ///
    /// # Errors
    /// Bytes no request asked for are waiting.
    fn begin(&mut self) -> anyhow::Result<()> {
        self.start();
        ensure!(
            !self.has_partial(),
            "the server sent bytes no request asked for"
        );
        Ok(())
    }

    /// The complete response `head` (from [`Self::complete`]) of a
    /// keep-alive connection.
    ///
    /// # Errors
    /// The server said it will close the connection.
    fn keep_alive_response(&self, head: &Head) -> anyhow::Result<Response<'_>> {
        ensure!(
            !head.close,
            "the server asked to close the connection (status {}); keep-alive is required",
            head.status
        );
        Ok(Response {
            status: head.status,
            body: self.body(head),
        })
    }

    /// The vector to read into (append only).
    pub fn read_target(&mut self) -> &mut Vec<u8> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        &mut self.buf
    }

    /// The current response's head once the whole response is in, marking
    /// it consumed; `Ok(None)` while bytes are missing.
    ///
    /// # Errors
    /// Those of [`parse_head`].
    pub fn complete(&mut self) -> anyhow::Result<Option<Head>> {
        let head = match self.head {
            Some(head) => head,
            None => match parse_head(&self.buf)? {
                Some(head) => *self.head.insert(head),
                None => return Ok(None),
            },
        };
        if self.buf.len() < head.total_len() {
            return Ok(None);
        }
        self.consumed = head.total_len();
        Ok(Some(head))
    }

    /// The body of the complete response `head` (from [`Self::complete`]).
    pub fn body(&self, head: &Head) -> &[u8] {
        &self.buf[head.head_len..head.total_len()]
    }

    /// Whether bytes have been read that no complete response accounts for.
    pub fn has_partial(&self) -> bool {
        self.buf.len() > self.consumed
    }
}

/// A response: its status and body.
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: &'a [u8],
}

impl Response<'_> {
    /// The body as text, cut to `max` characters, for error messages.
    pub fn body_text(&self, max: usize) -> String {
        let text = String::from_utf8_lossy(self.body);
        if text.chars().count() > max {
            format!("{}…", text.chars().take(max).collect::<String>())
        } else {
            text.into_owned()
        }
    }

    /// Fails unless the status is `expected`.
    ///
    /// # Errors
    /// Any other status, with the body.
    pub fn expect(&self, expected: u16, what: &str) -> anyhow::Result<()> {
        ensure!(
            self.status == expected,
            "{what}: expected status {expected}, got {}: {}",
            self.status,
            self.body_text(500)
        );
        Ok(())
    }
}

/// Writes a request into `out` (cleared first): request line, `Host`,
/// and, for a body or any method but GET and HEAD, `Content-Type:
/// application/json` and `Content-Length`; then the body.
pub fn write_request(out: &mut Vec<u8>, method: &str, path: &str, host: &str, body: &[u8]) {
    out.clear();
    let mut head = String::with_capacity(128);
    let _ = write!(head, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
        let _ = write!(
            head,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body);
}

/// A request as a new vector; see [`write_request`].
pub fn request(method: &str, path: &str, host: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_request(&mut out, method, path, host, body);
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for one
/// path segment.
pub fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    responses: ResponseBuffer,
    host: String,
}

impl Connection {
    /// Connects to `addr` with Nagle's algorithm off.
    ///
    /// # Errors
    /// The connection fails.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            responses: ResponseBuffer::new(),
            host: addr.to_string(),
        })
    }

    /// The `Host` header value for requests on this connection.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends one complete request (see [`write_request`]) and reads its
    /// response.
    ///
    /// # Errors
    /// I/O errors, a malformed response, the server closing the connection
    /// (before or after the response: this client only does keep-alive).
    pub async fn send(&mut self, request: &[u8]) -> anyhow::Result<Response<'_>> {
        self.responses.begin()?;
        self.stream
            .write_all(request)
            .await
            .context("writing the request")?;
        let head = loop {
            if let Some(head) = self.responses.complete()? {
                break head;
            }
            let read = self
                .stream
                .read_buf(self.responses.read_target())
                .await
                .context("reading the response")?;
            ensure!(
                read > 0,
                "the server closed the connection before the whole response arrived"
            );
        };
        self.responses.keep_alive_response(&head)
    }
}

/// Bytes a [`BlockingConnection`] reads at most per `read` call.
const READ_CHUNK: usize = 16 * 1024;

/// One keep-alive connection on a `std` socket, for a load generator that
/// gives each connection an OS thread of its own: the same framing as
/// [`Connection`], with blocking reads and writes.
#[derive(Debug)]
pub struct BlockingConnection {
    stream: std::net::TcpStream,
    responses: ResponseBuffer,
    /// What each `read` fills before its bytes go to `responses`: allocated
    /// and zeroed once, so that a read costs a copy of the bytes read only.
    scratch: Box<[u8]>,
    host: String,
}

impl BlockingConnection {
    /// Connects to `addr` with Nagle's algorithm off; `timeout` bounds the
    /// connect and each read and write, so that a server that stops
    /// answering fails the call instead of blocking its thread for ever.
    ///
    /// # Errors
    /// The connection fails or times out.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> anyhow::Result<BlockingConnection> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(BlockingConnection {
            stream,
            responses: ResponseBuffer::new(),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            host: addr.to_string(),
        })
    }

    /// The `Host` header value for requests on this connection.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends one complete request (see [`write_request`]) and reads its
    /// response.
    ///
    /// # Errors
    /// As [`Connection::send`]; also a read or write that takes longer than
    /// the connection's timeout.
    pub fn send(&mut self, request: &[u8]) -> anyhow::Result<Response<'_>> {
        self.responses.begin()?;
        self.stream
            .write_all(request)
            .context("writing the request")?;
        let head = loop {
            if let Some(head) = self.responses.complete()? {
                break head;
            }
            let read = match self.stream.read(&mut self.scratch) {
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(anyhow::Error::new(e).context("reading the response")),
            };
            ensure!(
                read > 0,
                "the server closed the connection before the whole response arrived"
            );
            self.responses.extend(&self.scratch[..read]);
        };
        self.responses.keep_alive_response(&head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSE: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
        location: /v1/jobs/00000000000000a1\r\nCONTENT-LENGTH: 27\r\n\
        date: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n{\"id\":\"00000000000000a1\"}\r\n";

    fn body_of(response: &[u8]) -> &[u8] {
        let start = find(response, b"\r\n\r\n").unwrap() + 4;
        &response[start..]
    }

    #[test]
    fn parses_a_complete_head() {
        let head = parse_head(RESPONSE).unwrap().unwrap();
        assert_eq!(head.status, 202);
        assert_eq!(head.content_length, 27);
        assert_eq!(head.total_len(), RESPONSE.len());
        assert!(!head.close);
        assert_eq!(&RESPONSE[head.head_len..], body_of(RESPONSE));
    }

    #[test]
    fn a_head_without_its_blank_line_is_incomplete() {
        for cut in 0..RESPONSE.len() {
            let partial = &RESPONSE[..cut];
            let parsed = parse_head(partial).unwrap();
            let head_len = find(RESPONSE, b"\r\n\r\n").unwrap() + 4;
            assert_eq!(parsed.is_some(), cut >= head_len, "cut at {cut}");
        }
    }

    #[test]
    fn a_response_split_at_every_byte_is_reassembled() {
        for chunk in [1, 2, 3, 7, 16, 64, RESPONSE.len()] {
            let mut buffer = ResponseBuffer::new();
            buffer.start();
            let mut done = None;
            for (i, piece) in RESPONSE.chunks(chunk).enumerate() {
                assert!(done.is_none(), "complete before the last piece");
                buffer.extend(piece);
                done = buffer.complete().unwrap();
                if (i + 1) * chunk < RESPONSE.len() {
                    assert!(done.is_none(), "chunk {chunk}, piece {i}");
                }
            }
            let head = done.unwrap();
            assert_eq!(head.status, 202);
            assert_eq!(buffer.body(&head), body_of(RESPONSE));
            assert!(!buffer.has_partial());
        }
    }

    #[test]
    fn bytes_after_a_response_are_kept_for_the_next() {
        let second = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let mut both = RESPONSE.to_vec();
        both.extend_from_slice(second);
        let mut buffer = ResponseBuffer::new();
        buffer.start();
        // The first response and half of the second arrive together.
        let split = RESPONSE.len() + 20;
        buffer.extend(&both[..split]);
        let head = buffer.complete().unwrap().unwrap();
        assert_eq!(buffer.body(&head), body_of(RESPONSE));
        assert!(buffer.has_partial());
        buffer.start();
        assert!(buffer.complete().unwrap().is_none());
        buffer.extend(&both[split..]);
        let head = buffer.complete().unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(buffer.body(&head), b"{}");
        buffer.start();
        assert!(!buffer.has_partial());
    }

    #[test]
    fn an_empty_body_is_complete_with_its_head() {
        let mut buffer = ResponseBuffer::new();
        buffer.extend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let head = buffer.complete().unwrap().unwrap();
        assert_eq!(buffer.body(&head), b"");
        // 204 needs no Content-Length.
        let head = parse_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.content_length, 0);
    }

    #[test]
    fn connection_close_is_noticed() {
        let head = parse_head(b"HTTP/1.1 503 Service Unavailable\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 503);
        assert!(head.close);
    }

    #[test]
    fn malformed_or_unsupported_heads_are_errors() {
        for bad in [
            &b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",
        ] {
            assert!(
                parse_head(bad).is_err(),
                "{:?} should be refused",
                String::from_utf8_lossy(bad)
            );
        }
        // Reason phrases are optional; repeated equal lengths are fine.
        assert!(parse_head(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").is_ok());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\ncontent-length: 0\r\n\r\n")
                .is_ok()
        );
    }

    #[test]
    fn an_endless_head_is_refused() {
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        while long.len() <= MAX_HEAD {
            long.extend_from_slice(b"x-filler: 0123456789abcdef\r\n");
        }
        assert!(parse_head(&long).is_err());
    }

    #[test]
    fn requests_carry_their_length() {
        let text = request(
            "POST",
            "/v1/queues/q/jobs",
            "127.0.0.1:1",
            br#"{"payload":{}}"#,
        );
        assert_eq!(
            text,
            b"POST /v1/queues/q/jobs HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\
              Content-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"payload\":{}}"
        );
        let get = request("GET", "/v1/queues/q", "h", b"");
        assert_eq!(get, b"GET /v1/queues/q HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(path_segment("00ff-a.b_c~"), "00ff-a.b_c~");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    /// Over a real socket: a server that writes each response in small
    /// pieces with pauses, so the client sees it split across reads.
    #[test]
    fn a_connection_reads_responses_split_across_reads() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket.set_nodelay(true).unwrap();
            let mut request = Vec::new();
            for _ in 0..2 {
                // Read one request (these have no body).
                let mut byte = [0u8; 1];
                request.clear();
                while !request.ends_with(b"\r\n\r\n") {
                    socket.read_exact(&mut byte).unwrap();
                    request.push(byte[0]);
                }
                for piece in RESPONSE.chunks(9) {
                    socket.write_all(piece).unwrap();
                    socket.flush().unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut connection = Connection::connect(addr).await.unwrap();
            let get = request("GET", "/x", connection.host(), b"");
            for _ in 0..2 {
                let response = connection.send(&get).await.unwrap();
                assert_eq!(response.status, 202);
                assert_eq!(response.body, body_of(RESPONSE));
                response.expect(202, "get").unwrap();
                assert!(response.expect(200, "get").is_err());
            }
        });
        server.join().unwrap();
    }

    /// Reads one request without a body (up to its blank line).
    fn read_request(socket: &mut std::net::TcpStream) {
        use std::io::Read;
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") {
            socket.read_exact(&mut byte).unwrap();
            request.push(byte[0]);
        }
    }

    /// The blocking connection over a real socket: responses split across
    /// reads, then a response that asks to close, a response cut short by
    /// the server closing, and a server that does not answer.
    #[test]
    fn a_blocking_connection_reads_responses_and_refuses_what_it_cannot_keep() {
        use std::io::Write;
        use std::time::Duration;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket.set_nodelay(true).unwrap();
            for _ in 0..3 {
                read_request(&mut socket);
                for piece in RESPONSE.chunks(9) {
                    socket.write_all(piece).unwrap();
                    socket.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            read_request(&mut socket);
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            let (mut socket, _) = listener.accept().unwrap();
            read_request(&mut socket);
            socket.write_all(&RESPONSE[..RESPONSE.len() - 3]).unwrap();
            drop(socket);
            // Accepted but never answered: the client's read times out.
            let (mut socket, _) = listener.accept().unwrap();
            read_request(&mut socket);
            std::thread::sleep(Duration::from_millis(600));
        });
        let timeout = Duration::from_millis(300);
        let mut connection = BlockingConnection::connect(addr, timeout).unwrap();
        assert_eq!(connection.host(), addr.to_string());
        let get = request("GET", "/x", connection.host(), b"");
        for _ in 0..3 {
            let response = connection.send(&get).unwrap();
            assert_eq!(response.status, 202);
            assert_eq!(response.body, body_of(RESPONSE));
        }
        let closing = connection.send(&get).unwrap_err();
        assert!(format!("{closing:#}").contains("keep-alive"), "{closing:#}");
        let mut cut = BlockingConnection::connect(addr, timeout).unwrap();
        let short = cut.send(&get).unwrap_err();
        assert!(format!("{short:#}").contains("closed"), "{short:#}");
        let mut silent = BlockingConnection::connect(addr, timeout).unwrap();
        let started = std::time::Instant::now();
        let stalled = silent.send(&get).unwrap_err();
        assert!(
            format!("{stalled:#}").contains("reading the response"),
            "{stalled:#}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        server.join().unwrap();
    }
}
