//! Reading the past, rolling back, playing back and exporting, against a real
//! node over HTTP and through the `spread` command line.

mod common;

use common::*;

/// 2023-11-14T22:13:20Z in microseconds: events below are written at
/// explicit times from here, so every read of the past is exact.
const T0: u64 = 1_700_000_000_000_000;
const S: u64 = 1_000_000;

/// Writes `body` at `path` with an explicit event time (and `query`).
async fn put_at(s: &Server, path: &str, time: u64, query: &str, body: &[u8]) -> Reply {
    let r = send(
        http()
            .put(format!("{}{query}", s.at("raw", path)))
            .insert_header(("x-spread-time", time.to_string())),
        Some(body),
    )
    .await;
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    r
}

/// Deletes `path` with an explicit event time.
async fn delete_at(s: &Server, path: &str, time: u64) {
    let r = send(
        http()
            .delete(s.at("raw", path))
            .insert_header(("x-spread-time", time.to_string())),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

/// The body at `path` as of `at` (any form the API takes), or the status.
async fn read_at(s: &Server, path: &str, at: &str) -> Result<String, u16> {
    let r = get(&format!("{}?at={at}", s.at("raw", path))).await;
    match r.status {
        200 => Ok(String::from_utf8(r.body.to_vec()).unwrap()),
        404 => {
            r.assert_error(404, "not_found");
            Err(404)
        }
        other => Err(other),
    }
}

/// The paths and versions a listing of `prefix` as of `at` holds.
async fn list_at(s: &Server, prefix: &str, at: &str) -> Vec<String> {
    let r = get(&format!("{}?at={at}", s.at("list", prefix))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect()
}

/// Runs the `spread` command line against `s`; its standard output, or
/// its standard error when it failed.
fn cli(s: &Server, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spread"))
        .args(args)
        .args(["--server", &s.url])
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    if out.status.success() {
        Ok(text(out.stdout))
    } else {
        Err(text(out.stderr))
    }
}

#[actix_web::test]
async fn reads_of_the_past_answer_as_a_path_and_a_listing_stood() {
    let s = Server::start(&[]);
    put_at(&s, "doc/a", T0, "", b"a1").await;
    put_at(&s, "doc/b", T0 + 5 * S, "?ttl=10", b"b1").await; // expires at T0 + 15 s
    put_at(&s, "doc/a", T0 + 10 * S, "", b"a2").await;
    delete_at(&s, "doc/a", T0 + 20 * S).await;
    put_at(&s, "doc/c", T0 + 30 * S, "", b"c1").await;

    let us = |t: u64| t.to_string();
    assert_eq!(read_at(&s, "doc/a", &us(T0 - 1)).await, Err(404), "before");
    assert_eq!(read_at(&s, "doc/a", &us(T0)).await.as_deref(), Ok("a1"));
    assert_eq!(
        read_at(&s, "doc/a", &us(T0 + 10 * S - 1)).await.as_deref(),
        Ok("a1")
    );
    assert_eq!(
        read_at(&s, "doc/a", &us(T0 + 15 * S)).await.as_deref(),
        Ok("a2")
    );
    assert_eq!(
        read_at(&s, "doc/a", &us(T0 + 25 * S)).await,
        Err(404),
        "deleted"
    );
    assert_eq!(
        read_at(&s, "doc/b", &us(T0 + 14 * S)).await.as_deref(),
        Ok("b1")
    );
    assert_eq!(
        read_at(&s, "doc/b", &us(T0 + 15 * S)).await,
        Err(404),
        "expired"
    );
    // RFC 3339, with an offset and a fraction, names the same moments.
    assert_eq!(
        read_at(&s, "doc/a", "2023-11-14T22:13:25Z")
            .await
            .as_deref(),
        Ok("a1")
    );
    assert_eq!(
        read_at(&s, "doc/a", "2023-11-14T23:13:30.000001%2B01:00")
            .await
            .as_deref(),
        Ok("a2")
    );
    // The ETag of a past read is the version that stood then.
    let r = get(&format!("{}?at={}", s.at("raw", "doc/a"), T0 + 12 * S)).await;
    assert!(r
        .header("etag")
        .unwrap()
        .starts_with(&format!("\"{}.", T0 + 10 * S)));

    // Listings: before, between and after the changes.
    let l = async |t: u64| list_at(&s, "doc", &us(t)).await;
    assert!(l(T0 - 1).await.is_empty());
    assert_eq!(l(T0 + 6 * S).await, ["doc/a", "doc/b"]);
    assert_eq!(l(T0 + 16 * S).await, ["doc/a"]);
    assert!(l(T0 + 21 * S).await.is_empty());
    assert_eq!(l(T0 + 31 * S).await, ["doc/c"]);
    assert_eq!(
        list_at(&s, "doc", "2023-11-14T22:13:26Z").await,
        ["doc/a", "doc/b"]
    );

    // A malformed time is a 400 naming the parameter, never a guess.
    for bad in ["yesterday", "-1", "2023-11-14", "99999999999999999999"] {
        let r = get(&format!("{}?at={bad}", s.at("raw", "doc/a"))).await;
        r.assert_error(400, "bad_time");
        assert!(r.json()["detail"].as_str().unwrap().contains("?at"));
        get(&format!("{}?at={bad}", s.at("list", "doc")))
            .await
            .assert_error(400, "bad_time");
    }
    get(&format!("{}?from=soon", s.at("history", "doc/a")))
        .await
        .assert_error(400, "bad_time");
    // History ranges take RFC 3339 too.
    let h = get(&format!(
        "{}?from=2023-11-14T22:13:25Z&to=2023-11-14T22:13:45Z",
        s.at("history", "doc/a")
    ))
    .await
    .json();
    assert_eq!(h["events"].as_array().unwrap().len(), 2, "{h}");

    // The command line: `get --at` and `list --at`.
    let at = (T0 + 12 * S).to_string();
    assert_eq!(cli(&s, &["get", "doc/a", "--at", &at]), Ok("a2".into()));
    let listed = cli(&s, &["list", "doc", "--at", "2023-11-14T22:13:26Z"]).unwrap();
    let paths: Vec<&str> = listed
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    assert_eq!(paths, ["doc/a", "doc/b"]);
    let err = cli(&s, &["get", "doc/a", "--at", &(T0 + 25 * S).to_string()]).unwrap_err();
    assert!(err.contains("not_found"), "{err}");
    let err = cli(&s, &["get", "doc/a", "--at", "noon"]).unwrap_err();
    assert!(err.contains("bad_time"), "{err}");
}
