//! Redis: `SUBSCRIBE <channel>` on N connections, `PUBLISH` from one more,
//! speaking RESP2 over plain TCP. The subscribers' decoder only finds where
//! each pushed value ends (no allocation); the publisher is blocking code.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::AsyncWriteExt as _;

use crate::recv::{read_loop, Conn, Decoder, Frame, Receivers, MAX_FRAME_BYTES};
use crate::stats::Summary;
use crate::Common;

/// Connects the subscribers, then times `common.repeats` publishes.
pub fn run(addr: &str, channel: &str, common: &Common) -> anyhow::Result<Summary> {
    let subscribe = encode_command(&[b"SUBSCRIBE", channel.as_bytes()]);
    let mut rx = Receivers::start(common.threads, common.subscribers, common.poll())?;
    crate::connect_all(&mut rx, common, |rx| {
        rx.open(|_, sub| {
            let addr = addr.to_string();
            let subscribe = subscribe.clone();
            async move {
                let mut conn = Conn::connect(&addr).await?;
                conn.stream
                    .write_all(&subscribe)
                    .await
                    .context("sending SUBSCRIBE")?;
                read_loop(conn, RespDecoder, &sub).await
            }
        })
    })?;

    let mut publisher = Publisher::open(addr, common.timeout())?;
    let pong = publisher.call(&[b"PING"]).context("PING")?;
    if pong != "+PONG" {
        bail!("PING answered {pong:?}");
    }
    let expected = format!(":{}", common.subscribers);
    crate::measure(&mut rx, common, |value| {
        let reply = publisher
            .call(&[b"PUBLISH", channel.as_bytes(), value])
            .context("PUBLISH")?;
        if reply != expected {
            bail!("PUBLISH answered {reply:?}, expected {expected} (subscribers reached)");
        }
        Ok(())
    })
}

/// The PUBLISH connection (blocking).
pub(crate) struct Publisher {
    /// The socket, buffered for reading replies.
    conn: BufReader<TcpStream>,
}

impl Publisher {
    /// Connects to `addr` (no Nagle delay; replies awaited up to `timeout`).
    pub(crate) fn open(addr: &str, timeout: Duration) -> anyhow::Result<Publisher> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream
            .set_read_timeout(Some(timeout))
            .context("a read timeout")?;
        Ok(Publisher {
            conn: BufReader::new(stream),
        })
    }

    /// Sends one command and returns its one-line reply (`+PONG`, `:3`);
    /// an error reply is an error.
    pub(crate) fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<String> {
        self.conn
            .get_mut()
            .write_all(&encode_command(args))
            .context("sending a command")?;
        let mut line = String::new();
        if self.conn.read_line(&mut line).context("reading a reply")? == 0 {
            bail!("the server closed the connection");
        }
        let line = line.trim_end();
        if let Some(e) = line.strip_prefix('-') {
            bail!("redis error: {e}");
        }
        Ok(line.to_string())
    }
}

/// A command as a RESP array of bulk strings.
pub(crate) fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Cuts a subscriber's stream into RESP values: each pushed array is one
/// data frame (its raw bytes, searched as a whole).
pub struct RespDecoder;

impl Decoder for RespDecoder {
    fn decode<'a>(&mut self, buf: &'a [u8]) -> anyhow::Result<Option<(Frame<'a>, usize)>> {
        if buf.first() == Some(&b'-') {
            if let Some(end) = line_end(buf, 0) {
                bail!("redis error: {}", String::from_utf8_lossy(&buf[1..end]));
            }
            return Ok(None);
        }
        Ok(value_end(buf, 0)?.map(|end| (Frame::Data(&buf[..end]), end)))
    }

    /// The reply to SUBSCRIBE: `["subscribe", channel, count]`.
    fn is_ready(&self, data: &[u8]) -> anyhow::Result<bool> {
        Ok(data.starts_with(b"*3\r\n$9\r\nsubscribe\r\n"))
    }

    fn pong(&mut self, _payload: &[u8]) -> Vec<u8> {
        Vec::new() // RESP has no server pings
    }
}

/// Where the line starting at `at` ends (the index of its `\r`).
fn line_end(buf: &[u8], at: usize) -> Option<usize> {
    memchr::memmem::find(&buf[at..], b"\r\n").map(|i| at + i)
}

/// Where the RESP value starting at `at` ends (just past it), `None` if it
/// is incomplete.
fn value_end(buf: &[u8], at: usize) -> anyhow::Result<Option<usize>> {
    let Some(eol) = line_end(buf, at) else {
        return Ok(None);
    };
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let after = eol + 2;
    match kind {
        b'+' | b'-' | b':' => Ok(Some(after)),
        b'$' => {
            let len = number(&buf[at + 1..eol])?;
            if len < 0 {
                return Ok(Some(after));
            }
            if len > MAX_FRAME_BYTES as i64 {
                bail!("a {len}-byte bulk string (limit {MAX_FRAME_BYTES})");
            }
            let end = after + len as usize + 2;
            if buf.len() < end {
                return Ok(None);
            }
            if &buf[end - 2..end] != b"\r\n" {
                bail!("a bulk string without its CRLF");
            }
            Ok(Some(end))
        }
        b'*' => {
            let len = number(&buf[at + 1..eol])?;
            let mut end = after;
            for _ in 0..len.max(0) {
                match value_end(buf, end)? {
                    Some(e) => end = e,
                    None => return Ok(None),
                }
            }
            Ok(Some(end))
        }
        other => bail!("unknown RESP type byte {other:#04x}"),
    }
}

/// A decimal number in a RESP header.
fn number(s: &[u8]) -> anyhow::Result<i64> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("a bad RESP number {:?}", String::from_utf8_lossy(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_command() {
        assert_eq!(
            encode_command(&[b"PUBLISH", b"fan", b"hi"]),
            b"*3\r\n$7\r\nPUBLISH\r\n$3\r\nfan\r\n$2\r\nhi\r\n"
        );
    }

    #[test]
    fn cuts_messages_in_pieces() {
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$3\r\nfan\r\n:1\r\n";
        let msg = b"*3\r\n$7\r\nmessage\r\n$3\r\nfan\r\n$5\r\nhello\r\n";
        let mut stream = sub.to_vec();
        stream.extend_from_slice(msg);
        let mut d = RespDecoder;
        for cut in 0..sub.len() {
            assert!(
                d.decode(&stream[..cut]).expect("valid").is_none(),
                "cut at {cut}"
            );
        }
        let Some((Frame::Data(first), used)) = d.decode(&stream).expect("valid") else {
            panic!("a value");
        };
        assert_eq!(used, sub.len());
        assert!(d.is_ready(first).expect("ready"));
        let rest = &stream[used..];
        for cut in 0..msg.len() {
            assert!(
                d.decode(&rest[..cut]).expect("valid").is_none(),
                "cut at {cut}"
            );
        }
        let Some((Frame::Data(second), used)) = d.decode(rest).expect("valid") else {
            panic!("a value");
        };
        assert_eq!((second, used), (&msg[..], msg.len()));
        assert!(!d.is_ready(second).expect("not ready"));
    }

    #[test]
    fn rejects_garbage() {
        let mut d = RespDecoder;
        assert!(d.decode(b"?what\r\n").is_err());
        assert!(d.decode(b":x\r\n").is_ok(), "integers are skipped whole");
        assert!(d.decode(b"$3\r\nabcde\r\n").is_err());
        assert!(d.decode(b"-ERR max clients\r\n").is_err());
        assert!(d.decode(b"$x\r\n").is_err());
    }
}
