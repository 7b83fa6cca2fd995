//! Spread: WebSocket subscribers on `/wss/<prefix>`, writes with
//! `PUT /raw/<prefix>/x`.

use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use awc::ws::{Frame, Message};
use futures_util::{SinkExt as _, StreamExt as _};

use crate::stats::{Fanout, Summary};
use crate::Common;

/// Largest frame a subscriber accepts (snapshots of big values).
const MAX_FRAME_BYTES: usize = 16 << 20;

/// Connects the subscribers, then times `common.repeats` writes.
pub async fn run(addr: &str, prefix: &str, common: &Common) -> anyhow::Result<Summary> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        bail!("--prefix must not be empty");
    }
    let client = client(common.timeout());
    let ws_url = format!("ws://{addr}/wss/{prefix}");
    let put_url = format!("http://{addr}/raw/{prefix}/x");
    let fanout = Rc::new(Fanout::new(common.subscribers));

    crate::connect_all(&fanout, common, |fanout| {
        let client = client.clone();
        let url = ws_url.clone();
        actix_web::rt::spawn(async move {
            if let Err(e) = subscriber(&client, &url, &fanout).await {
                fanout.fail(format!("{e:#}"));
            }
        });
    })
    .await?;

    crate::measure(&fanout, common, |value| put(&client, &put_url, value)).await
}

/// An HTTP/1.1 client without a connection limit.
fn client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .max_http_version(awc::http::Version::HTTP_11)
        .connector(awc::Connector::new().limit(0).timeout(timeout))
        .timeout(timeout)
        .finish()
}

/// One subscriber: connects, waits for `ready`, then reports every text
/// frame to `fanout` until the connection fails.
async fn subscriber(client: &awc::Client, url: &str, fanout: &Fanout) -> anyhow::Result<()> {
    let (_response, mut framed) = client
        .ws(url)
        .max_frame_size(MAX_FRAME_BYTES)
        .connect()
        .await
        .map_err(|e| anyhow!("connecting {url}: {e}"))?;
    let mut ready = false;
    while let Some(frame) = framed.next().await {
        let frame = frame.map_err(|e| anyhow!("reading from {url}: {e}"))?;
        match frame {
            Frame::Text(payload) | Frame::Binary(payload) => {
                if ready {
                    fanout.observe(&payload);
                } else if is_ready(&payload)? {
                    ready = true;
                    fanout.mark_ready();
                }
            }
            Frame::Ping(payload) => framed
                .send(Message::Pong(payload))
                .await
                .map_err(|e| anyhow!("answering a ping on {url}: {e}"))?,
            Frame::Close(reason) => bail!("{url} closed the session: {reason:?}"),
            Frame::Pong(_) | Frame::Continuation(_) => {}
        }
    }
    bail!("{url} ended the session")
}

/// Is this frame `{"type":"ready",...}`? (An `error` frame is an error.)
fn is_ready(payload: &[u8]) -> anyhow::Result<bool> {
    let frame: serde_json::Value =
        serde_json::from_slice(payload).context("a frame that is not JSON")?;
    match frame.get("type").and_then(serde_json::Value::as_str) {
        Some("ready") => Ok(true),
        Some("error") => bail!("the server sent an error: {frame}"),
        _ => Ok(false),
    }
}

/// `PUT url` with `value` as a text body; fails unless the answer is 2xx.
async fn put(client: &awc::Client, url: &str, value: Vec<u8>) -> anyhow::Result<()> {
    let mut response = client
        .put(url)
        .insert_header(("content-type", "text/plain"))
        .send_body(value)
        .await
        .map_err(|e| anyhow!("PUT {url}: {e}"))?;
    let body = response
        .body()
        .await
        .map_err(|e| anyhow!("PUT {url}: reading the answer: {e}"))?;
    if !response.status().is_success() {
        bail!(
            "PUT {url}: {}: {}",
            response.status(),
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}
