//! Spread: WebSocket subscribers on `/wss/<prefix>` (the hand-written client
//! of [`crate::ws`]), writes with `PUT /raw/<prefix>/x` over one keep-alive
//! HTTP/1.1 connection written by hand.

use std::io::{BufReader, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::recv::{read_loop, Conn, Receivers};
use crate::stats::Summary;
use crate::ws::{handshake, os_seed, Rng, WsDecoder};
use crate::Common;

/// Connects the subscribers, then times `common.repeats` writes.
pub fn run(addr: &str, prefix: &str, common: &Common) -> anyhow::Result<Summary> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        bail!("--prefix must not be empty");
    }
    let ws_path = format!("/wss/{prefix}");
    let seed = os_seed();
    let mut rx = Receivers::start(common.threads, common.subscribers, common.poll())?;
    crate::connect_all(&mut rx, common, |rx| {
        rx.open(|index, sub| {
            let addr = addr.to_string();
            let path = ws_path.clone();
            async move {
                let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut conn = Conn::connect(&addr).await?;
                handshake(&mut conn, &addr, &path, &mut rng)
                    .await
                    .with_context(|| format!("upgrading {path}"))?;
                read_loop(conn, WsDecoder::new(rng), &sub).await
            }
        })
    })?;
    let mut put = Put::new(addr, common.timeout());
    let path = format!("/raw/{prefix}/x");
    crate::measure(&mut rx, common, |value| put.send(&path, value))
}

/// `PUT`s of text bodies on one keep-alive connection.
pub(crate) struct Put {
    /// Server address, HOST:PORT.
    addr: String,
    /// Read and write timeout.
    timeout: Duration,
    /// The connection, once open (and while the server keeps it).
    conn: Option<BufReader<TcpStream>>,
}

impl Put {
    /// A client for `PUT`s to `addr`; connects on the first send.
    pub(crate) fn new(addr: &str, timeout: Duration) -> Put {
        Put {
            addr: addr.to_string(),
            timeout,
            conn: None,
        }
    }

    /// Sends `value` to `path`; fails unless the answer is 2xx.
    pub(crate) fn send(&mut self, path: &str, value: &[u8]) -> anyhow::Result<()> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(&self.addr)
                    .with_context(|| format!("connecting to {}", self.addr))?;
                stream.set_nodelay(true).context("TCP_NODELAY")?;
                stream
                    .set_read_timeout(Some(self.timeout))
                    .context("a read timeout")?;
                stream
                    .set_write_timeout(Some(self.timeout))
                    .context("a write timeout")?;
                BufReader::new(stream)
            }
        };
        let mut request = format!(
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            value.len()
        )
        .into_bytes();
        request.extend_from_slice(value);
        conn.get_mut()
            .write_all(&request)
            .with_context(|| format!("PUT {}: sending", path))?;
        let answer = read_answer(&mut conn).with_context(|| format!("PUT {}", path))?;
        if !(200..300).contains(&answer.status) {
            bail!(
                "PUT {}: {}: {}",
                path,
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        if !answer.close {
            self.conn = Some(conn);
        }
        Ok(())
    }
}

/// An HTTP/1.1 answer.
struct Answer {
    /// Status code.
    status: u16,
    /// Body (content-length or chunked).
    body: Vec<u8>,
    /// The server closes the connection after it.
    close: bool,
}

/// Reads one answer from `conn`.
fn read_answer<R: std::io::BufRead>(conn: &mut R) -> anyhow::Result<Answer> {
    let mut line = String::new();
    read_line(conn, &mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("a bad status line {line:?}"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        read_line(conn, &mut line)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            bail!("a bad header line {line:?}");
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().context("a bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            read_line(conn, &mut line)?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).context("a bad chunk size")?;
            if size == 0 {
                // Trailers, up to the empty line.
                while {
                    read_line(conn, &mut line)?;
                    !line.is_empty()
                } {}
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            conn.read_exact(&mut body[at..])
                .context("reading a chunk")?;
            read_line(conn, &mut line)?;
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        conn.read_exact(&mut body).context("reading the body")?;
    } else if status != 204 && status != 304 {
        // No length: the body runs to the end of the connection.
        conn.read_to_end(&mut body).context("reading the body")?;
        close = true;
    }
    Ok(Answer {
        status,
        body,
        close,
    })
}

/// One line into `line`, without its CRLF; end of stream is an error.
fn read_line<R: std::io::BufRead>(conn: &mut R, line: &mut String) -> anyhow::Result<()> {
    line.clear();
    if conn.read_line(line).context("reading the answer")? == 0 {
        bail!("the server closed the connection");
    }
    let trimmed = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(trimmed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_answers() {
        let mut input: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 400 Bad\r\n\
            Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n";
        let a = read_answer(&mut input).expect("first");
        assert_eq!(
            (a.status, a.body.as_slice(), a.close),
            (200, &b"ok"[..], false)
        );
        let b = read_answer(&mut input).expect("second");
        assert_eq!(
            (b.status, b.body.as_slice(), b.close),
            (400, &b"abcde"[..], true)
        );
        assert!(input.is_empty());
        assert!(read_answer(&mut input).is_err());
    }
}
