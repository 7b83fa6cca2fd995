//! The client verbs: plain HTTP calls to a node, printed for humans and
//! scripts. Errors print the node's JSON error and exit non-zero.

use std::io::{Read, Write};

use anyhow::{bail, Context};
use awc::http::StatusCode;
use futures_util::StreamExt;

use crate::cli::ClientArgs;

/// Most bytes a response body may have before the client gives up.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

pub(crate) fn url(client: &ClientArgs, route: &str, path: &str) -> String {
    let encoded: String = path
        .trim_matches('/')
        .split('/')
        .map(|seg| {
            percent_encoding::utf8_percent_encode(seg, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    format!("{}/{route}/{encoded}", client.server.trim_end_matches('/'))
}

pub(crate) fn http(client: &ClientArgs) -> awc::Client {
    let mut builder = awc::Client::builder().timeout(std::time::Duration::from_secs(30));
    if let Some(token) = &client.token {
        builder = builder.bearer_auth(token);
    }
    builder.finish()
}

/// Sends `req` (with `body` for writes) and reads the whole answer.
pub(crate) async fn exchange(
    req: awc::ClientRequest,
    body: Option<Vec<u8>>,
    what: &str,
) -> anyhow::Result<(StatusCode, bytes::Bytes)> {
    let sent = match body {
        Some(b) => req.send_body(b).await,
        None => req.send().await,
    };
    let mut res = sent.map_err(|e| anyhow::anyhow!("{what} failed: {e}"))?;
    let body = res
        .body()
        .limit(MAX_RESPONSE_BYTES)
        .await
        .context("reading the response")?;
    Ok((res.status(), body))
}

/// The body of a successful answer, or the node's error as the error.
pub(crate) fn success((status, body): (StatusCode, bytes::Bytes)) -> anyhow::Result<bytes::Bytes> {
    if status.is_success() {
        Ok(body)
    } else {
        Err(anyhow::anyhow!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ))
    }
}

fn json_of(body: &[u8]) -> anyhow::Result<serde_json::Value> {
    serde_json::from_slice(body).context("the node sent bad JSON")
}

/// `spread get`.
pub async fn get(client: ClientArgs, path: String, at: Option<String>) -> anyhow::Result<()> {
    let mut req = http(&client).get(url(&client, "raw", &path));
    if let Some(at) = &at {
        req = req.query(&[("at", at)]).context("building the query")?;
    }
    let body = success(exchange(req, None, "GET").await?)?;
    std::io::stdout().write_all(&body)?;
    Ok(())
}

/// `spread set`.
pub async fn set(
    client: ClientArgs,
    path: String,
    value: Option<String>,
    content_type: Option<String>,
    time: Option<u64>,
) -> anyhow::Result<()> {
    let body = match value {
        Some(v) => v.into_bytes(),
        None => {
            let mut buf = Vec::new();
            // One byte past the engine's limit tells an oversized value
            // without reading all of it.
            let limit = spread_actors::model::limits::MAX_VALUE_BYTES;
            std::io::stdin()
                .take(limit as u64 + 1)
                .read_to_end(&mut buf)
                .context("reading the value from standard input")?;
            if buf.len() > limit {
                bail!("the value on standard input is over {limit} bytes");
            }
            buf
        }
    };
    let mut req = http(&client).put(url(&client, "raw", &path));
    if let Some(ct) = content_type {
        req = req.insert_header(("content-type", ct));
    }
    if let Some(t) = time {
        req = req.insert_header(("x-spread-time", t.to_string()));
    }
    report(exchange(req, Some(body), "PUT").await?)
}

/// `spread del`.
pub async fn del(client: ClientArgs, path: String) -> anyhow::Result<()> {
    let req = http(&client).delete(url(&client, "raw", &path));
    report(exchange(req, None, "DELETE").await?)
}

/// Prints a write report; an error if the write was not applied.
fn report((status, body): (StatusCode, bytes::Bytes)) -> anyhow::Result<()> {
    println!("{}", String::from_utf8_lossy(&body));
    if status.is_success() {
        Ok(())
    } else {
        bail!("the write was not applied ({status})")
    }
}

/// `spread list`.
pub async fn list(
    client: ClientArgs,
    prefix: String,
    json: bool,
    at: Option<String>,
) -> anyhow::Result<()> {
    let http = http(&client);
    let mut after: Option<String> = None;
    loop {
        let mut query = Vec::new();
        if let Some(a) = &after {
            query.push(("after", a.as_str()));
        }
        if let Some(at) = &at {
            query.push(("at", at.as_str()));
        }
        let mut req = http.get(url(&client, "list", &prefix));
        if !query.is_empty() {
            req = req.query(&query).context("building the query")?;
        }
        let page = json_of(&success(exchange(req, None, "listing").await?)?)?;
        if json {
            println!("{page}");
        } else {
            for e in page["entries"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}\t{}",
                    e["path"].as_str().unwrap_or(""),
                    e["version"].as_str().unwrap_or(""),
                    e["size"],
                    e["content_type"].as_str().unwrap_or("-")
                );
            }
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(()),
        }
    }
}

/// `spread history`.
pub async fn history(client: ClientArgs, path: String) -> anyhow::Result<()> {
    let req = http(&client).get(url(&client, "history", &path));
    let page = json_of(&success(exchange(req, None, "history").await?)?)?;
    for e in page["events"].as_array().into_iter().flatten() {
        println!("{e}");
    }
    Ok(())
}

/// `spread rollback`: prints the node's answer; an error unless every path
/// was rolled back.
pub async fn rollback(
    client: ClientArgs,
    path: String,
    to: String,
    recursive: bool,
) -> anyhow::Result<()> {
    let mut query = vec![("to", to.as_str())];
    if recursive {
        query.push(("recursive", "true"));
    }
    let req = http(&client)
        .post(url(&client, "rollback", &path))
        .query(&query)
        .context("building the query")?;
    let (status, body) = exchange(req, None, "rollback").await?;
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(json) => println!("{}", serde_json::to_string_pretty(&json)?),
        Err(_) => println!("{}", String::from_utf8_lossy(&body)),
    }
    if !status.is_success() {
        bail!("the rollback was not done whole ({status})");
    }
    Ok(())
}

/// `spread cluster`: the node's view of the cluster, as JSON.
pub async fn cluster(client: ClientArgs) -> anyhow::Result<()> {
    let base = client.server.trim_end_matches('/');
    let req = http(&client).get(format!("{base}/cluster"));
    let view = json_of(&success(exchange(req, None, "cluster").await?)?)?;
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}

/// `spread repair`: anti-entropy under a prefix now; what each session did.
pub async fn repair(client: ClientArgs, prefix: String) -> anyhow::Result<()> {
    let req = http(&client).post(url(&client, "repair", &prefix));
    let report = json_of(&success(exchange(req, None, "repair").await?)?)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `spread watch`: one JSON line per event, `{"event": <kind>, "id", "data"}`.
/// A bounded playback (`--to`) ends at its `end` event.
pub async fn watch(
    client: ClientArgs,
    prefix: String,
    since: Option<String>,
    (from, to): (Option<String>, Option<String>),
    count: Option<usize>,
) -> anyhow::Result<()> {
    let http = awc::Client::builder().disable_timeout().finish();
    let mut query = Vec::new();
    if let Some(from) = &from {
        query.push(("from", from.as_str()));
    }
    if let Some(to) = &to {
        query.push(("to", to.as_str()));
    }
    let mut req = http
        .get(url(&client, "sse", &prefix))
        .insert_header(("accept", "text/event-stream"));
    if !query.is_empty() {
        req = req.query(&query).context("building the query")?;
    }
    if let Some(token) = &client.token {
        req = req.bearer_auth(token);
    }
    if let Some(since) = since {
        req = req.insert_header(("last-event-id", since));
    }
    let mut res = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("subscribing failed: {e}"))?;
    if !res.status().is_success() {
        let body = res
            .body()
            .limit(MAX_RESPONSE_BYTES)
            .await
            .context("reading the response")?;
        return success((res.status(), body)).map(|_| ());
    }
    let mut events = eventsource_stream::EventStream::new(res);
    let mut seen = 0usize;
    let mut out = std::io::stdout();
    while let Some(event) = events.next().await {
        let event = event.context("the stream broke")?;
        let data: serde_json::Value =
            serde_json::from_str(&event.data).unwrap_or(serde_json::Value::Null);
        let line = serde_json::json!({"event": event.event, "id": event.id, "data": data});
        writeln!(out, "{line}")?;
        out.flush()?;
        if event.event == "error" {
            // The node could not send the snapshot whole; the stream ends.
            bail!(
                "the node ended the stream: {}",
                data["detail"].as_str().unwrap_or("an error")
            );
        }
        if event.event == "end" {
            return Ok(());
        }
        if matches!(
            event.event.as_str(),
            "snapshot" | "update" | "reset" | "playback"
        ) {
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
    }
    bail!("the node closed the stream")
}

/// `spread token`: prints a signed JWT.
pub fn token(args: crate::cli::TokenArgs) -> anyhow::Result<()> {
    use spread_web::auth::{mint, Claims, RightsClaim};
    // A node refuses a token whose subject it could not store as an author.
    spread_actors::model::limits::check_author(&args.sub).context("--sub")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let rights = (!args.read.is_empty() || !args.write.is_empty()).then(|| RightsClaim {
        read: args.read.clone(),
        write: args.write.clone(),
    });
    let claims = Claims {
        sub: Some(args.sub),
        iss: args.iss,
        iat: Some(now),
        exp: now.saturating_add(args.ttl),
        spread: rights,
        ..Claims::default()
    };
    println!("{}", mint(&args.key, &claims).context("signing the token")?);
    Ok(())
}
