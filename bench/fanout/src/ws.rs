//! A minimal WebSocket client (RFC 6455), enough for a subscriber: the
//! HTTP/1.1 Upgrade handshake (checking the `101` status and
//! `Sec-WebSocket-Accept`), a decoder for the server's unmasked frames, and
//! masked pongs.

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rand::rngs::SmallRng;
use rand::{RngCore as _, SeedableRng as _};
use sha1::{Digest as _, Sha1};
use tokio::io::AsyncWriteExt as _;

use crate::recv::{Conn, Decoder, Frame, MAX_FRAME_BYTES};

/// Appended to the key before hashing it into `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest handshake answer accepted.
const MAX_HEAD_BYTES: usize = 16 << 10;

/// Random bits for handshake keys and pong masks (they need to be
/// unpredictable to proxies, not secret).
#[derive(Clone, Debug)]
pub struct Rng(SmallRng);

impl Rng {
    /// A sequence from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(SmallRng::seed_from_u64(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

/// 64 bits from the OS.
pub fn os_seed() -> u64 {
    rand::random()
}

/// Upgrades `conn` to a WebSocket on `path` of `host`. Bytes the server
/// sent after its answer stay in `conn`.
pub async fn handshake(
    conn: &mut Conn,
    host: &str,
    path: &str,
    rng: &mut Rng,
) -> anyhow::Result<()> {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    raw[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let key = BASE64.encode(raw);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    conn.stream
        .write_all(request.as_bytes())
        .await
        .context("sending the upgrade request")?;
    loop {
        if let Some(end) = memchr::memmem::find(conn.data(), b"\r\n\r\n") {
            check_answer(&conn.data()[..end], &key)?;
            conn.consume(end + 4);
            return Ok(());
        }
        if conn.data().len() > MAX_HEAD_BYTES {
            bail!("an upgrade answer longer than {MAX_HEAD_BYTES} bytes");
        }
        conn.fill().await.context("reading the upgrade answer")?;
    }
}

/// Checks the head of the upgrade answer: `101`, and the accept hash of `key`.
fn check_answer(head: &[u8], key: &str) -> anyhow::Result<()> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        bail!("upgrade refused: {status}");
    }
    let expected = accept_of(key);
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("sec-websocket-accept") {
                if value.trim() == expected {
                    return Ok(());
                }
                bail!(
                    "Sec-WebSocket-Accept is {}, expected {expected}",
                    value.trim()
                );
            }
        }
    }
    bail!("the upgrade answer has no Sec-WebSocket-Accept")
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
fn accept_of(key: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(key.as_bytes());
    hash.update(ACCEPT_GUID);
    BASE64.encode(hash.finalize())
}

/// Cuts a server's frames; answers pings with masked pongs.
pub struct WsDecoder {
    /// Masking keys of the pongs.
    rng: Rng,
}

impl WsDecoder {
    /// A decoder whose pong masks come from `rng`.
    pub fn new(rng: Rng) -> WsDecoder {
        WsDecoder { rng }
    }
}

impl Decoder for WsDecoder {
    fn decode<'a>(&mut self, buf: &'a [u8]) -> anyhow::Result<Option<(Frame<'a>, usize)>> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            bail!("a frame with RSV bits set ({b0:#04x}): no extension was negotiated");
        }
        if b1 & 0x80 != 0 {
            bail!("a masked frame from the server");
        }
        let (len, head) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if len > MAX_FRAME_BYTES as u64 {
            bail!("a {len}-byte frame (limit {MAX_FRAME_BYTES})");
        }
        let end = head + len as usize;
        let Some(payload) = buf.get(head..end) else {
            return Ok(None);
        };
        let frame = match b0 & 0x0f {
            // Text, binary, and continuations: pieces of a fragmented
            // message are searched one by one (Spread sends small messages
            // whole).
            0..=2 => Frame::Data(payload),
            8 => Frame::Close(payload),
            9 => Frame::Ping(payload),
            10 => Frame::Other,
            op => bail!("unknown opcode {op:#x}"),
        };
        Ok(Some((frame, end)))
    }

    /// Spread's `{"type":"ready",...}` (the floor server sends the same).
    fn is_ready(&self, data: &[u8]) -> anyhow::Result<bool> {
        if crate::recv::contains(data, b"\"type\":\"error\"") {
            bail!(
                "the server sent an error: {}",
                String::from_utf8_lossy(data)
            );
        }
        Ok(data.starts_with(b"{\"type\":\"ready\""))
    }

    fn pong(&mut self, payload: &[u8]) -> Vec<u8> {
        // Control frames carry at most 125 bytes; a longer ping is a
        // protocol error, answered with what fits.
        let payload = &payload[..payload.len().min(125)];
        client_frame(0xA, payload, self.rng.next_u64() as u32)
    }
}

/// A final client frame with `opcode`, masked with `mask` (clients must mask).
pub fn client_frame(opcode: u8, payload: &[u8], mask: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = mask.to_be_bytes();
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A final, unmasked text frame as a server sends it.
pub fn server_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_example() {
        assert_eq!(
            accept_of("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn checks_the_answer() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                   sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert!(check_answer(ok, key).is_ok());
        assert!(check_answer(b"HTTP/1.1 403 Forbidden\r\n", key).is_err());
        assert!(check_answer(b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: x", key).is_err());
    }

    #[test]
    fn decodes_server_frames_in_pieces() {
        let mut d = WsDecoder::new(Rng::new(1));
        let long = vec![b'x'; 300];
        let mut stream = server_text_frame(b"{\"type\":\"ready\"}");
        stream.extend(server_text_frame(&long));
        stream.extend([0x89, 2, b'h', b'i']);
        let first = 2 + 16;
        for cut in 0..first {
            assert!(d.decode(&stream[..cut]).expect("valid").is_none());
        }
        let Some((Frame::Data(p), used)) = d.decode(&stream).expect("valid") else {
            panic!("a data frame");
        };
        assert!(d.is_ready(p).expect("not an error"));
        assert_eq!(used, first);
        let rest = &stream[used..];
        assert!(d.decode(&rest[..303]).expect("valid").is_none());
        let Some((Frame::Data(p), used)) = d.decode(rest).expect("valid") else {
            panic!("a data frame");
        };
        assert_eq!((p.len(), used), (300, 304));
        assert!(matches!(
            d.decode(&rest[used..]).expect("valid"),
            Some((Frame::Ping(b"hi"), 4))
        ));
        assert!(d.decode(&[0x81, 0x81, 0, 0, 0, 0, 0]).is_err(), "masked");
        assert!(d.is_ready(b"{\"type\":\"error\",\"code\":\"x\"}").is_err());
    }

    #[test]
    fn masks_client_frames() {
        let frame = client_frame(0xA, b"hi", 0x0102_0304);
        assert_eq!(frame, [0x8A, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    }
}
