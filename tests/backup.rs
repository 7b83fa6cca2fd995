//! `spread export` and `spread import` against real nodes: a round trip
//! reproduces latest values, versions and histories exactly, importing twice
//! changes nothing, and a bad line refuses the whole import.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::*;

const T0: u64 = 1_700_000_000_000_000;
const S: u64 = 1_000_000;

/// Runs the `spread` command line against `s` with `stdin`; its standard
/// output, or its standard error when it failed.
fn cli(s: &Server, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spread"))
        .args(args)
        .args(["--server", &s.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn write(s: &Server, path: &str, time: u64, headers: &[(&str, &str)], body: Option<&[u8]>) {
    let mut req = match body {
        Some(_) => http().put(s.at("raw", path)),
        None => http().delete(s.at("raw", path)),
    };
    req = req.insert_header(("x-spread-time", time.to_string()));
    for h in headers {
        req = req.insert_header(*h);
    }
    let r = send(req, body).await;
    assert!(
        r.status < 300 || r.status == 409,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

/// The merkle hash of everything `s` holds under `prefix`, and how many
/// events it covers.
async fn digest(s: &Server, prefix: &str) -> (String, u64) {
    let d = get(&s.at("digest", prefix)).await.json();
    (
        d["hash"].as_str().unwrap().to_string(),
        d["items"].as_u64().unwrap(),
    )
}

/// Asserts that `b` holds under `prefix` exactly what `a` does: the same
/// answers and histories (compared path by path, naming the first that
/// differs), and, once both merkle trees have folded the last commits,
/// the same digest.
async fn assert_same(a: (&Server, &[serde_json::Value]), b: &Server, prefix: &str, events: u64) {
    let held = everything(b, prefix).await;
    assert_eq!(held.len(), a.1.len(), "paths");
    for (x, y) in a.1.iter().zip(&held) {
        assert_eq!(x, y, "first path that differs");
    }
    wait_for(
        "the same digest over every event",
        EVENT_DEADLINE,
        async || {
            let (ours, theirs) = (digest(a.0, prefix).await, digest(b, prefix).await);
            ours == theirs && ours.1 == events
        },
    )
    .await;
}

/// Everything a node holds under `prefix`: each path's latest answer
/// (status, ETag, content type, body) and whole history.
async fn everything(s: &Server, prefix: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let list = get(&format!("{}?limit=10000", s.at("list", prefix)))
        .await
        .json();
    let mut paths: Vec<String> = list["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    // Deleted paths are in no listing: ask for them by name.
    paths.extend(["b/gone".to_string(), "b/expired".to_string()]);
    paths.sort();
    paths.dedup();
    for path in paths {
        let r = get(&s.at("raw", &path)).await;
        let mut history = get(&s.at("history", &path)).await.json();
        for e in history["events"].as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("seq"); // node-local
        }
        out.push(serde_json::json!({
            "path": path,
            "status": r.status,
            "etag": r.header("etag"),
            "content_type": r.header("content-type"),
            "body": String::from_utf8_lossy(&r.body),
            "history": history,
        }));
    }
    out
}

#[actix_web::test]
async fn an_export_imported_into_a_fresh_node_reproduces_everything_and_twice_changes_nothing() {
    let a = Server::start(&[]);
    let text = [("content-type", "text/plain")];
    for i in 0..30u64 {
        write(
            &a,
            &format!("b/{i}"),
            T0 + i * S,
            &text,
            Some(format!("v{i}").as_bytes()),
        )
        .await;
        write(
            &a,
            &format!("b/{i}"),
            T0 + (100 + i) * S,
            &[],
            Some(b"second"),
        )
        .await;
    }
    // History-only events (older than the value), a delete, an expired
    // value, a value that is not UTF-8, an empty one.
    write(&a, "b/3", T0 + 50 * S, &[], Some(b"late")).await;
    write(&a, "b/gone", T0, &[], Some(b"soon deleted")).await;
    write(&a, "b/gone", T0 + S, &[], None).await;
    let expired = send(
        http()
            .put(format!("{}?ttl=1", a.at("raw", "b/expired")))
            .insert_header(("x-spread-time", T0.to_string())),
        Some(b"old"),
    )
    .await;
    assert_eq!(expired.status, 201);
    // Its expiry (a tombstone the node writes when it comes due) joins
    // its history.
    wait_for("b/expired's expiry", EVENT_DEADLINE, async || {
        get(&a.at("history", "b/expired")).await.json()["events"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    write(&a, "b/bin", T0, &[], Some(&[0, 159, 146, 150, 255])).await;
    write(&a, "b/empty", T0, &[], Some(b"")).await;
    write(&a, "other/x", T0, &[], Some(b"not exported")).await;
    let before = everything(&a, "b").await;
    let export = cli(&a, &["export", "b"], None).unwrap();
    let lines = export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(
        lines,
        30 * 2 + 1 + 2 + 2 + 1 + 1,
        "every event under b, history included"
    );
    assert!(!String::from_utf8_lossy(&export).contains("not exported"));

    // Into a fresh node, from a file.
    let b = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.jsonl");
    std::fs::write(&file, &export).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&cli(&b, &["import", file.to_str().unwrap()], None).unwrap())
            .unwrap();
    assert_eq!(report["events"], lines);
    assert_same((&a, &before), &b, "b", lines as u64).await;
    // Twice: nothing changes.
    let again: serde_json::Value =
        serde_json::from_slice(&cli(&b, &["import", file.to_str().unwrap()], None).unwrap())
            .unwrap();
    assert_eq!(
        (again["existing"].as_u64(), again["new"].as_u64()),
        (Some(lines as u64), Some(0))
    );
    assert_same((&a, &before), &b, "b", lines as u64).await;

    // MessagePack, through standard input, into a third node.
    let packed = cli(&a, &["export", "b", "--format", "msgpack"], None).unwrap();
    assert!(
        packed.len() < export.len(),
        "MessagePack is the smaller form"
    );
    let c = Server::start(&[]);
    cli(&c, &["import", "-", "--format", "msgpack"], Some(&packed)).unwrap();
    assert_same((&a, &before), &c, "b", lines as u64).await;
}

#[actix_web::test]
async fn a_bad_line_is_reported_by_number_and_nothing_is_imported() {
    let s = Server::start(&[]);
    let good = |i: u64| {
        format!(
            r#"{{"path":"imp/{i}","version":"{}.n1","value":"v"}}"#,
            T0 + i
        )
    };
    let file = [
        good(1),
        good(2),
        String::new(),
        r#"{"path":"imp/3","version":"not a version","value":"v"}"#.to_string(),
        good(5),
        r#"{"path":"imp//6","version":"1.n1","value":"v"}"#.to_string(),
        "{ not json".to_string(),
    ]
    .join("\n");
    let err = cli(&s, &["import", "-"], Some(file.as_bytes())).unwrap_err();
    for line in ["line 4:", "line 6:", "line 7:"] {
        assert!(err.contains(line), "{err}");
    }
    assert!(err.contains("nothing imported"), "{err}");
    let listed = get(&s.at("list", "imp")).await.json();
    assert_eq!(
        listed["entries"].as_array().unwrap().len(),
        0,
        "nothing applied"
    );

    // The node checks every record of a body too, whoever sends it.
    let r = send(
        http().post(format!("{}/import", s.url)),
        Some(file.as_bytes()),
    )
    .await;
    r.assert_error(400, "bad_request");
    let lines: Vec<u64> = r.json()["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 6, 7]);
    assert_eq!(
        get(&s.at("list", "imp")).await.json()["entries"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // A time too far ahead is refused whole as well.
    let future = format!(
        "{}\n{}",
        good(1),
        r#"{"path":"imp/f","version":"9000000000000000.n1","value":"v"}"#
    );
    send(
        http().post(format!("{}/import", s.url)),
        Some(future.as_bytes()),
    )
    .await
    .assert_error(400, "bad_time");
    assert_eq!(
        get(&s.at("list", "imp")).await.json()["entries"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Good lines go in; unknown formats and methods are refused.
    let r = send(
        http().post(format!("{}/import", s.url)),
        Some(format!("{}\n{}\n", good(1), good(2)).as_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["new"], 2);
    send(
        http().post(format!("{}/import?format=xml", s.url)),
        Some(b""),
    )
    .await
    .assert_error(400, "bad_request");
    get(&format!("{}/import", s.url))
        .await
        .assert_error(405, "method_not_allowed");
    send(http().post(s.at("export", "imp")), None)
        .await
        .assert_error(405, "method_not_allowed");
}

#[actix_web::test]
async fn an_import_body_over_its_limit_is_refused_whole_and_the_node_serves_on() {
    // The limit is 32 MiB of records plus twice the largest value.
    let s = Server::start(&["--max-body-bytes", "1024"]);
    let line = format!(r#"{{"path":"imp/big","version":"{}.n1","value":"v"}}"#, T0);
    let mut body = Vec::with_capacity((33 << 20) + line.len());
    while body.len() < (32 << 20) + 4096 {
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }
    let r = send(http().post(format!("{}/import", s.url)), Some(&body)).await;
    r.assert_error(413, "too_large");
    assert_eq!(
        get(&s.at("list", "imp")).await.json()["entries"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing imported"
    );
    let r = put(&s.at("raw", "imp/after"), b"v").await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
}
