//! Redis: `SUBSCRIBE <channel>` on N connections, `PUBLISH` from one more,
//! speaking RESP over plain TCP.

use std::rc::Rc;

use anyhow::{bail, Context as _};
use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::stats::{Fanout, Summary};
use crate::Common;

/// Connects the subscribers, then times `common.repeats` publishes.
pub async fn run(addr: &str, channel: &str, common: &Common) -> anyhow::Result<Summary> {
    let fanout = Rc::new(Fanout::new(common.subscribers));
    let addr = addr.to_string();
    let channel = Bytes::copy_from_slice(channel.as_bytes());

    crate::connect_all(&fanout, common, |fanout| {
        let addr = addr.clone();
        let channel = channel.clone();
        actix_web::rt::spawn(async move {
            if let Err(e) = subscriber(&addr, &channel, &fanout).await {
                fanout.fail(format!("{e:#}"));
            }
        });
    })
    .await?;

    let mut publisher = Connection::open(&addr).await?;
    match publisher.call(&[b"PING"]).await.context("PING")? {
        Value::Simple(s) if s == "PONG" => {}
        other => bail!("PING answered {other:?}"),
    }
    let publisher = Rc::new(tokio::sync::Mutex::new(publisher));
    let expected = common.subscribers as i64;
    crate::measure(&fanout, common, |value| {
        let publisher = publisher.clone();
        let channel = channel.clone();
        async move {
            let mut conn = publisher.lock().await;
            let reply = conn
                .call(&[b"PUBLISH", &channel, &value])
                .await
                .context("PUBLISH")?;
            match reply {
                Value::Int(n) if n == expected => Ok(()),
                Value::Int(n) => bail!("PUBLISH reached {n} subscribers, expected {expected}"),
                other => bail!("PUBLISH answered {other:?}"),
            }
        }
    })
    .await
}

/// One subscriber: subscribes, then reports every message to `fanout`
/// until the connection fails.
async fn subscriber(addr: &str, channel: &[u8], fanout: &Fanout) -> anyhow::Result<()> {
    let mut conn = Connection::open(addr).await?;
    let reply = conn
        .call(&[b"SUBSCRIBE", channel])
        .await
        .context("SUBSCRIBE")?;
    match reply {
        Value::Array(Some(items)) if matches!(items.first(), Some(Value::Bulk(Some(k))) if k.as_ref() == b"subscribe") =>
            {}
        other => bail!("SUBSCRIBE answered {other:?}"),
    }
    fanout.mark_ready();
    loop {
        match conn.read().await? {
            Value::Array(Some(items)) => {
                if let [Value::Bulk(Some(kind)), _, Value::Bulk(Some(payload))] = items.as_slice() {
                    if kind.as_ref() == b"message" {
                        fanout.observe(payload);
                    }
                }
            }
            other => bail!("unexpected push from {addr}: {other:?}"),
        }
    }
}

/// A RESP value (RESP2: what SUBSCRIBE, PUBLISH and PING answer).
#[derive(Debug, PartialEq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3\r\nabc` (`None`: `$-1`).
    Bulk(Option<Bytes>),
    /// `*2\r\n...` (`None`: `*-1`).
    Array(Option<Vec<Value>>),
}

/// A connection with its read buffer.
struct Connection {
    /// The socket.
    stream: TcpStream,
    /// Bytes read but not yet parsed.
    buf: BytesMut,
}

impl Connection {
    /// Connects to `addr` (no Nagle delay).
    async fn open(addr: &str) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(Connection {
            stream,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// Sends one command and reads one reply; an error reply is an error.
    async fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<Value> {
        let command = encode_command(args);
        self.stream
            .write_all(&command)
            .await
            .context("sending a command")?;
        match self.read().await? {
            Value::Error(e) => bail!("redis error: {e}"),
            v => Ok(v),
        }
    }

    /// Reads one value.
    async fn read(&mut self) -> anyhow::Result<Value> {
        loop {
            if let Some((value, used)) = parse(&self.buf)? {
                self.buf.advance(used);
                return Ok(value);
            }
            self.buf.reserve(4096);
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .context("reading a reply")?;
            if n == 0 {
                bail!("the server closed the connection");
            }
        }
    }
}

/// A command as a RESP array of bulk strings.
fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one value at the start of `buf`: `None` if it is incomplete, else
/// the value and how many bytes it took.
fn parse(buf: &[u8]) -> anyhow::Result<Option<(Value, usize)>> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..line_end].split_first() else {
        bail!("an empty RESP line");
    };
    let line = std::str::from_utf8(line).context("a RESP line that is not UTF-8")?;
    let after = line_end + 2;
    let value = match kind {
        b'+' => Value::Simple(line.to_string()),
        b'-' => Value::Error(line.to_string()),
        b':' => Value::Int(number(line)?),
        b'$' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Some((Value::Bulk(None), after)));
            }
            let len = usize::try_from(len).context("a bulk length")?;
            let end = after + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                bail!("a bulk string without its CRLF");
            }
            return Ok(Some((
                Value::Bulk(Some(Bytes::copy_from_slice(&buf[after..end]))),
                end + 2,
            )));
        }
        b'*' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Some((Value::Array(None), after)));
            }
            let len = usize::try_from(len).context("an array length")?;
            let mut items = Vec::with_capacity(len.min(64));
            let mut at = after;
            for _ in 0..len {
                let Some((item, used)) = parse(&buf[at..])? else {
                    return Ok(None);
                };
                items.push(item);
                at += used;
            }
            return Ok(Some((Value::Array(Some(items)), at)));
        }
        other => bail!("unknown RESP type byte {other:#04x}"),
    };
    Ok(Some((value, after)))
}

/// A decimal number in a RESP header.
fn number(s: &str) -> anyhow::Result<i64> {
    s.parse()
        .with_context(|| format!("a bad RESP number {s:?}"))
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
    fn parses_a_message_in_pieces() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$3\r\nfan\r\n$5\r\nhello\r\n:7\r\n";
        for cut in 0..msg.len() - 4 {
            assert_eq!(parse(&msg[..cut]).ok(), Some(None), "cut at {cut}");
        }
        let (value, used) = parse(msg).ok().flatten().expect("a whole message");
        assert_eq!(used, msg.len() - 4);
        assert_eq!(
            value,
            Value::Array(Some(vec![
                Value::Bulk(Some(Bytes::from_static(b"message"))),
                Value::Bulk(Some(Bytes::from_static(b"fan"))),
                Value::Bulk(Some(Bytes::from_static(b"hello"))),
            ]))
        );
        assert_eq!(parse(&msg[used..]).ok().flatten(), Some((Value::Int(7), 4)));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
        assert!(parse(b"$3\r\nabcde\r\n").is_err());
    }
}
