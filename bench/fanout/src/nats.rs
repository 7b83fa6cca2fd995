//! A minimal NATS client for the latency benchmark, speaking the text
//! protocol (nats.io, "Client Protocol"): a subscriber's decoder and a
//! blocking publisher.
//!
//! The subscriber sends `CONNECT`, `SUB <subject> 1` and `PING`; the
//! server's `PONG` to that `PING` is its ready mark (the server has the
//! subscription). Messages come as `MSG <subject> <sid> [reply] <bytes>`,
//! a line, then the payload and `\r\n`; the server's `PING`s are answered
//! with `PONG`.
//!
//! The publisher sends `PUB <subject> <bytes>`, the payload, then `PING`,
//! and waits for the `PONG`: the server has taken the message (NATS has no
//! per-message acknowledgement; this round trip is the nearest to a write's
//! answer, and what the writer waits for before the next write, as it
//! waits for Spread's HTTP answer and Redis's `PUBLISH` reply).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::recv::{Decoder, Frame};

/// What a client says when it connects: no `+OK` after each command.
pub const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"spread-bench\"}\r\n";

/// The subscriber's first bytes: connect, subscribe to `subject`, and ask
/// for the `PONG` that marks it ready.
pub fn subscribe_command(subject: &str) -> Vec<u8> {
    let mut out = CONNECT.to_vec();
    out.extend_from_slice(format!("SUB {subject} 1\r\nPING\r\n").as_bytes());
    out
}

/// Cuts a subscriber's stream into NATS protocol messages: each `MSG` (its
/// line and payload) is one data frame; `PONG` is a data frame too (the
/// ready mark); `PING` is a ping; `INFO` and `+OK` are skipped.
pub struct NatsDecoder;

impl Decoder for NatsDecoder {
    fn decode<'a>(&mut self, buf: &'a [u8]) -> anyhow::Result<Option<(Frame<'a>, usize)>> {
        let Some(end) = memchr::memmem::find(buf, b"\r\n") else {
            return Ok(None);
        };
        let line = &buf[..end];
        let after = end + 2;
        if line.starts_with(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let bytes: usize = std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("a bad MSG line: {}", String::from_utf8_lossy(line)))?;
            let whole = after + bytes + 2;
            if buf.len() < whole {
                return Ok(None);
            }
            return Ok(Some((Frame::Data(&buf[..whole]), whole)));
        }
        if line == b"PING" {
            return Ok(Some((Frame::Ping(&buf[..0]), after)));
        }
        if line == b"PONG" {
            return Ok(Some((Frame::Data(line), after)));
        }
        if line.starts_with(b"-ERR") {
            bail!("nats error: {}", String::from_utf8_lossy(line));
        }
        // INFO {...}, +OK
        Ok(Some((Frame::Other, after)))
    }

    fn is_ready(&self, data: &[u8]) -> anyhow::Result<bool> {
        Ok(data == b"PONG")
    }

    fn pong(&mut self, _payload: &[u8]) -> Vec<u8> {
        b"PONG\r\n".to_vec()
    }
}

/// The publishing connection (blocking).
pub struct Publisher {
    conn: BufReader<TcpStream>,
}

impl Publisher {
    /// Connects to `addr` (no Nagle delay; answers awaited up to
    /// `timeout`) and waits until the server has taken `CONNECT`.
    pub fn open(addr: &str, timeout: Duration) -> anyhow::Result<Publisher> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream
            .set_read_timeout(Some(timeout))
            .context("a read timeout")?;
        let mut publisher = Publisher {
            conn: BufReader::new(stream),
        };
        let mut hello = CONNECT.to_vec();
        hello.extend_from_slice(b"PING\r\n");
        publisher.send_and_wait(&hello)?;
        Ok(publisher)
    }

    /// Publishes `payload` on `subject` and waits until the server has
    /// taken it (the `PONG` to a `PING` sent after it).
    pub fn publish(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + subject.len() + 32);
        out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\nPING\r\n");
        self.send_and_wait(&out)
    }

    /// Sends `bytes` (ending with a `PING`) and reads lines until `PONG`.
    fn send_and_wait(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.conn
            .get_mut()
            .write_all(bytes)
            .context("sending to the server")?;
        let mut line = String::new();
        loop {
            line.clear();
            if self.conn.read_line(&mut line).context("reading a reply")? == 0 {
                bail!("the server closed the connection");
            }
            match line.trim_end() {
                "PONG" => return Ok(()),
                "PING" => self
                    .conn
                    .get_mut()
                    .write_all(b"PONG\r\n")
                    .context("answering a ping")?,
                l if l.starts_with("-ERR") => bail!("nats error: {l}"),
                _ => {} // INFO, +OK
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_pings_and_the_ready_mark_are_cut_whole() {
        let mut d = NatsDecoder;
        let stream = b"INFO {\"server_id\":\"x\"}\r\nPONG\r\nMSG lat 1 5\r\nhello\r\nPING\r\nMSG lat 1 rep 2\r\nhi\r\nMSG lat 1 9\r\npar";
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((frame, used)) = d.decode(&stream[at..]).unwrap() {
            seen.push(match frame {
                Frame::Data(p) => String::from_utf8_lossy(p).into_owned(),
                Frame::Ping(_) => "ping".into(),
                Frame::Other => "other".into(),
                Frame::Close(_) => "close".into(),
            });
            at += used;
        }
        assert_eq!(
            seen,
            [
                "other",
                "PONG",
                "MSG lat 1 5\r\nhello\r\n",
                "ping",
                "MSG lat 1 rep 2\r\nhi\r\n",
            ]
        );
        assert_eq!(
            &stream[at..],
            b"MSG lat 1 9\r\npar",
            "an incomplete message waits"
        );
        assert!(d.is_ready(b"PONG").unwrap());
        assert!(d.decode(b"-ERR 'Unknown Protocol Operation'\r\n").is_err());
    }
}
