//! `spread export` and `spread import`: the node's `/export` stream to
//! standard output, and an export file merged back in batches, every record
//! checked before the first batch is sent.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, Write};

use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde::Deserialize;
use spread_web::transfer::{self, Format, Record};

use crate::cli::ClientArgs;
use crate::client::{exchange, http, success, url};

/// Bytes of records sent per `POST /import` (a bigger record goes alone).
const BATCH_BYTES: usize = 8 << 20;
/// Bad records listed at most.
const MAX_LISTED: usize = 20;

/// `spread export`: streams the node's answer to standard output as it
/// comes.
pub async fn export(client: ClientArgs, prefix: String, format: String) -> anyhow::Result<()> {
    Format::parse(&format).map_err(anyhow::Error::msg)?;
    let mut req = awc::Client::builder()
        .disable_timeout()
        .finish()
        .get(url(&client, "export", &prefix))
        .query(&[("format", format.as_str())])
        .context("building the query")?;
    if let Some(token) = &client.token {
        req = req.bearer_auth(token);
    }
    let mut res = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("export failed: {e}"))?;
    if !res.status().is_success() {
        let body = res.body().await.context("reading the response")?;
        return success((res.status(), body)).map(|_| ());
    }
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = res.next().await {
        let chunk = chunk.context("the export broke off (the node failed or went away)")?;
        out.write_all(&chunk)?;
    }
    out.flush()?;
    Ok(())
}

/// One record of an export file: its line (or number) and its bytes as
/// sent to the node.
type Item = (usize, Vec<u8>);

/// Reads the records of an export file, one at a time.
struct Records<R> {
    reader: BufReader<R>,
    format: Format,
    n: usize,
    /// A MessagePack record could not be read: nothing after it can be.
    broken: bool,
}

impl<R: Read> Records<R> {
    fn new(reader: R, format: Format) -> Self {
        Records {
            reader: BufReader::with_capacity(1 << 20, reader),
            format,
            n: 0,
            broken: false,
        }
    }

    /// The next record, checked: `Err((number, why))` when it is bad.
    fn next_checked(&mut self) -> Option<Result<Item, (usize, String)>> {
        match self.format {
            Format::Json => loop {
                let mut line = Vec::new();
                match self.reader.read_until(b'\n', &mut line) {
                    Ok(0) => return None,
                    Ok(_) => {}
                    Err(e) => return Some(Err((self.n + 1, e.to_string()))),
                }
                self.n += 1;
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                if text.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(match transfer::parse_line(text) {
                    Ok(_) => Ok((self.n, text.to_vec())),
                    Err(why) => Err((self.n, why)),
                });
            },
            Format::MsgPack => {
                if self.broken {
                    return None;
                }
                match self.reader.fill_buf() {
                    Ok([]) => return None,
                    Ok(_) => {}
                    Err(e) => return Some(Err((self.n + 1, e.to_string()))),
                }
                self.n += 1;
                let mut de = rmp_serde::Deserializer::new(&mut self.reader);
                Some(match Record::deserialize(&mut de) {
                    Ok(record) => {
                        let bytes = rmp_serde::to_vec_named(&record).expect("a record encodes");
                        match transfer::from_record(record) {
                            Ok(_) => Ok((self.n, bytes)),
                            Err(why) => Err((self.n, why)),
                        }
                    }
                    // Nothing after a record that cannot be read can be.
                    Err(e) => {
                        self.broken = true;
                        Err((self.n, e.to_string()))
                    }
                })
            }
        }
    }
}

/// The export file, or standard input copied to a temporary file (it is
/// read twice: checked, then sent).
fn open(file: &str) -> anyhow::Result<File> {
    if file != "-" {
        return File::open(file).with_context(|| format!("opening {file}"));
    }
    let mut spool = tempfile::tempfile().context("creating a temporary file for standard input")?;
    std::io::copy(&mut std::io::stdin().lock(), &mut spool).context("reading standard input")?;
    spool.rewind()?;
    Ok(spool)
}

/// `spread import`.
pub async fn import(client: ClientArgs, file: String, format: String) -> anyhow::Result<()> {
    let format = Format::parse(&format).map_err(anyhow::Error::msg)?;
    let mut input = open(&file)?;
    // Every record is checked before the first is sent.
    let mut bad = Vec::new();
    let mut records = Records::new(&mut input, format);
    while let Some(record) = records.next_checked() {
        if let Err((n, why)) = record {
            bad.push(format!("{} {n}: {why}", unit(format)));
        }
    }
    if !bad.is_empty() {
        let listed = bad.len().min(MAX_LISTED);
        bail!(
            "{} bad record(s) in {file}, nothing imported:\n  {}{}",
            bad.len(),
            bad[..listed].join("\n  "),
            if bad.len() > listed { "\n  …" } else { "" }
        );
    }
    input.rewind()?;
    let mut records = Records::new(&mut input, format);
    let mut sums = [0u64; 4];
    let mut batch: Vec<u8> = Vec::new();
    let mut first_line = 0;
    loop {
        let next = records.next_checked();
        let ends = next.is_none();
        if let Some(Ok((n, bytes))) = &next {
            if !batch.is_empty() && batch.len() + bytes.len() > BATCH_BYTES {
                send(&client, format, &mut batch, first_line, &mut sums).await?;
            }
            if batch.is_empty() {
                first_line = *n;
            }
            batch.extend_from_slice(bytes);
            if format == Format::Json {
                batch.push(b'\n');
            }
        } else if let Some(Err((n, why))) = next {
            bail!(
                "{file} changed while importing ({} {n}: {why})",
                unit(format)
            );
        }
        if ends {
            if !batch.is_empty() {
                send(&client, format, &mut batch, first_line, &mut sums).await?;
            }
            break;
        }
    }
    println!(
        "{}",
        serde_json::json!({"events": sums[0], "new": sums[1], "existing": sums[2], "too_late": sums[3]})
    );
    Ok(())
}

fn unit(format: Format) -> &'static str {
    match format {
        Format::Json => "line",
        Format::MsgPack => "record",
    }
}

/// Sends one batch and adds its counts to `sums` (events, new, existing,
/// too late).
async fn send(
    client: &ClientArgs,
    format: Format,
    batch: &mut Vec<u8>,
    first_line: usize,
    sums: &mut [u64; 4],
) -> anyhow::Result<()> {
    let base = client.server.trim_end_matches('/');
    let name = match format {
        Format::Json => "json",
        Format::MsgPack => "msgpack",
    };
    let req = http(client)
        .post(format!("{base}/import"))
        .query(&[("format", name)])
        .context("building the query")?
        .content_type(format.content_type());
    let answer = exchange(req, Some(std::mem::take(batch)), "import").await?;
    let body = success(answer).with_context(|| {
        format!(
            "the batch from {} {first_line} was refused (the batches before it were imported; \
             importing again is safe)",
            unit(format)
        )
    })?;
    let report: serde_json::Value =
        serde_json::from_slice(&body).context("the node sent bad JSON")?;
    for (i, key) in ["events", "new", "existing", "too_late"].iter().enumerate() {
        sums[i] += report[key].as_u64().unwrap_or(0);
    }
    Ok(())
}
