//! Crash safety: acknowledged writes survive SIGKILL with `flush` and
//! `batch` durability, and the clock and the change log carry on after them.

mod common;

use common::*;

/// Parses `"<time>.<node>"` into a sortable pair.
fn version_key(v: &serde_json::Value) -> (u64, String) {
    let (t, n) = v.as_str().unwrap().split_once('.').unwrap();
    (t.parse().unwrap(), n.to_string())
}

async fn acknowledged_writes_survive_sigkill(durability: &str) {
    let mut s = Server::start(&["--durability", durability]);
    let mut last_seq = 0;
    let mut versions = Vec::new();
    // Concurrent writers, so group commit is exercised.
    for round in 0..5 {
        let writes = (0..20).map(|i| {
            let url = s.at("raw", &format!("crash/k{i}"));
            async move { put(&url, format!("r{round}-{i}").as_bytes()).await }
        });
        for reply in futures_util::future::join_all(writes).await {
            assert!(reply.status == 200 || reply.status == 201);
            let report = reply.json();
            last_seq = last_seq.max(report["seq"].as_u64().unwrap());
            versions.push(version_key(&report["version"]));
        }
    }
    let deleted = send(http().delete(s.at("raw", "crash/k0")), None)
        .await
        .json();
    last_seq = last_seq.max(deleted["seq"].as_u64().unwrap());
    versions.push(version_key(&deleted["version"]));
    let old_ready = {
        let mut sse = SseClient::open(&s.at("sse", "crash"), None).await;
        sse.until_ready().await.pop().unwrap().id
    };

    s.kill9();
    s.restart();

    get(&s.at("raw", "crash/k0"))
        .await
        .assert_error(404, "not_found");
    for i in 1..20 {
        let got = get(&s.at("raw", &format!("crash/k{i}"))).await;
        assert_eq!(
            got.status, 200,
            "crash/k{i} lost after SIGKILL ({durability})"
        );
        assert_eq!(got.body, format!("r4-{i}").as_bytes());
    }
    let history = get(&s.at("history", "crash/k0")).await.json();
    assert_eq!(
        history["events"].as_array().unwrap().len(),
        6,
        "5 values and the delete"
    );
    for i in 1..20 {
        let h = get(&s.at("history", &format!("crash/k{i}"))).await.json();
        assert_eq!(h["events"].as_array().unwrap().len(), 5);
    }

    // The log carries on where it stopped, and versions keep growing.
    let next = put(&s.at("raw", "crash/after"), b"x").await.json();
    assert_eq!(
        next["seq"].as_u64().unwrap(),
        last_seq + 1,
        "seq continues without a gap or reuse"
    );
    let newest = versions.iter().max().unwrap();
    assert!(
        version_key(&next["version"]) > *newest,
        "new versions are greater than all old ones"
    );

    // A cursor from before the crash still resumes exactly (same incarnation).
    let mut sse = SseClient::open(&s.at("sse", "crash"), Some(&old_ready)).await;
    let resumed = sse.until_ready().await;
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    assert_eq!(resumed[0].event, "update");
    assert_eq!(resumed[0].data["path"], "crash/after");
}

#[actix_web::test]
async fn flush_durability_keeps_every_acknowledged_write_across_sigkill() {
    acknowledged_writes_survive_sigkill("flush").await;
}

#[actix_web::test]
async fn batch_durability_keeps_every_acknowledged_write_across_sigkill() {
    acknowledged_writes_survive_sigkill("batch").await;
}

#[actix_web::test]
async fn an_orderly_restart_keeps_node_id_and_incarnation() {
    let mut s = Server::start(&["--durability", "lazy"]);
    let v1 = put(&s.at("raw", "id/x"), b"1").await.json()["version"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sse = SseClient::open(&s.at("sse", "id"), None).await;
    let cursor = sse.until_ready().await.pop().unwrap().id;
    drop(sse);
    // SIGTERM: the node stops in order and flushes.
    s.terminate();
    s.restart();
    let v2 = put(&s.at("raw", "id/x"), b"2").await.json()["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        v1.split_once('.').unwrap().1,
        v2.split_once('.').unwrap().1,
        "same node id"
    );
    let mut sse = SseClient::open(&s.at("sse", "id"), Some(&cursor)).await;
    let resumed = sse.until_ready().await;
    assert_eq!(
        resumed[0].event, "update",
        "the old cursor resumes: {resumed:?}"
    );
}

#[actix_web::test]
async fn an_unclean_stop_with_lazy_durability_starts_a_new_incarnation() {
    let mut s = Server::start(&["--durability", "lazy"]);
    put(&s.at("raw", "lazy/x"), b"1").await;
    let mut sse = SseClient::open(&s.at("sse", "lazy"), None).await;
    let cursor = sse.until_ready().await.pop().unwrap().id;
    drop(sse);
    s.kill9();
    s.restart();
    // Changes streamed before the crash may be lost, and their seqs reused:
    // the old cursor must not be read as a position.
    let mut sse = SseClient::open(&s.at("sse", "lazy"), Some(&cursor)).await;
    let resumed = sse.until_ready().await;
    assert_eq!(resumed[0].event, "reset", "{resumed:?}");
    let ready = resumed.last().unwrap();
    assert_ne!(
        ready.id.split(':').next(),
        cursor.split(':').next(),
        "a new incarnation"
    );
}

#[actix_web::test]
async fn a_sigkill_amid_concurrent_writes_keeps_every_acknowledged_write_and_a_whole_log() {
    let mut s = Server::start(&["--durability", "flush"]);
    let start = {
        let mut sse = SseClient::open(&s.at("sse", "storm"), None).await;
        sse.until_ready().await.pop().unwrap().id
    };
    let pid = s.pid().to_string();
    // Each acknowledged write: its path, value and seq.
    let acked = std::cell::RefCell::new(Vec::<(String, String, u64)>::new());
    let writers = (0..16).map(|w| {
        let (acked, base) = (&acked, s.at("raw", "storm"));
        async move {
            let client = http();
            for j in 0.. {
                let (path, value) = (format!("storm/w{w}/k{}", j % 3), format!("{w}-{j}"));
                let url = format!("{base}/w{w}/k{}", j % 3);
                let Ok(mut res) = client.put(url).send_body(value.clone()).await else {
                    return; // the node is gone
                };
                let Ok(body) = res.body().await else { return };
                if !res.status().is_success() {
                    return;
                }
                let report: serde_json::Value = serde_json::from_slice(&body).unwrap();
                acked
                    .borrow_mut()
                    .push((path, value, report["seq"].as_u64().unwrap()));
            }
        }
    });
    // Killed while the 16 writers keep going, so commits are cut short.
    let killer = async {
        wait_for("400 acknowledged writes", EVENT_DEADLINE, async || {
            acked.borrow().len() >= 400
        })
        .await;
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        assert!(killed.is_ok_and(|k| k.success()));
    };
    futures_util::future::join(futures_util::future::join_all(writers), killer).await;
    s.kill9();
    s.restart();

    // The log replays whole from the start: consecutive seqs, each naming
    // an event the node has.
    let mut sse = SseClient::open(&s.at("sse", "storm"), Some(&start)).await;
    let replayed = sse.until_ready().await;
    let (ready, updates) = replayed.split_last().unwrap();
    assert_eq!(ready.event, "ready", "{ready:?}");
    let mut last = std::collections::HashMap::new();
    for (i, u) in updates.iter().enumerate() {
        assert_eq!(u.event, "update", "{u:?}");
        assert_eq!(u.data["seq"].as_u64(), Some(i as u64 + 1), "{u:?}");
        last.insert(
            u.data["path"].as_str().unwrap().to_string(),
            u.data["value"].as_str().unwrap().to_string(),
        );
    }
    let acked = acked.into_inner();
    let head = updates.len() as u64;
    for (path, value, seq) in &acked {
        assert!(
            *seq <= head,
            "acknowledged seq {seq} of {path} lost (head {head})"
        );
        let h = get(&s.at("history", path)).await.json();
        let values: Vec<&str> = h["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["value"].as_str().unwrap())
            .collect();
        assert!(values.contains(&value.as_str()), "{path}={value} lost: {h}");
    }
    // Every path's current value is the last change the log has for it.
    for (path, value) in &last {
        let got = get(&s.at("raw", path)).await;
        assert_eq!(got.status, 200, "{path}");
        assert_eq!(got.body, value.as_bytes(), "{path}");
    }
}

#[actix_web::test]
async fn a_lazy_write_followed_by_silence_is_flushed_and_the_durable_seq_says_when() {
    // `lazy` acks before the disk has a write; the committer flushes every
    // --lazy-flush-ms even when no write follows, and
    // `spread_log_seq_durable` tells how far the disk has it.
    let mut s = Server::start(&["--durability", "lazy", "--lazy-flush-ms", "100"]);
    let report = put(&s.at("raw", "lazy/x"), b"kept").await.json();
    let seq = report["seq"].as_u64().unwrap() as f64;
    wait_for(
        "the durable seq to reach the write",
        EVENT_DEADLINE,
        async || metric(&s, "spread_log_seq_durable").await >= seq,
    )
    .await;
    s.kill9();
    s.restart();
    let got = get(&s.at("raw", "lazy/x")).await;
    assert_eq!(
        got.status, 200,
        "a write the node called durable survived SIGKILL"
    );
    assert_eq!(&got.body[..], b"kept");
    assert!(metric(&s, "spread_log_seq_durable").await >= seq);
}
