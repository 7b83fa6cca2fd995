//! Chaos: five real nodes (child processes) take `w=quorum` writes while
//! nodes are killed with SIGKILL and restarted, and links between nodes are
//! cut by the fault switch (`--fault-injection`), one fault at a time. At
//! the end every acknowledged write is readable at every owner of its path,
//! and the owners agree on every latest value.
//!
//! Bounded to about a minute. The seed of the run is printed; set
//! `SPREAD_CHAOS_SEED` to replay its choice of faults.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use spread_actors::{Layout, Path};

const SECRET: &str = "a-cluster-secret-for-tests";
const NODES: usize = 5;
/// How long faults go on while writes are made.
const CHAOS: Duration = Duration::from_secs(20);

/// xorshift64*: a small, seedable choice of faults.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A write that never panics: its status, or `None` if no answer came.
async fn try_put(url: &str, body: &str) -> Option<u16> {
    let res = http()
        .put(url)
        .timeout(Duration::from_secs(10))
        .send_body(body.to_string())
        .await;
    let res = res.ok()?;
    Some(res.status().as_u16())
}

#[actix_web::test]
async fn acked_writes_survive_kills_and_cut_links_at_every_owner() {
    let seed = std::env::var("SPREAD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("chaos seed {seed} (SPREAD_CHAOS_SEED replays it)");
    let mut rng = Rng(seed);
    let ids: Vec<String> = (0..NODES).map(|i| format!("n{i}")).collect();
    let mut nodes: Vec<Server> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut args = vec![
            "--node-id",
            id.as_str(),
            "--cluster-secret",
            SECRET,
            "--fault-injection",
            "--workers",
            "1",
            "--cache-mb",
            "16",
        ];
        args.extend_from_slice(&FAST_PEERS);
        let joins: Vec<String> = nodes.iter().map(|s| s.addr.clone()).collect();
        let joins = joins.join(",");
        if i > 0 {
            args.extend_from_slice(&["--join", &joins]);
        }
        nodes.push(Server::start(&args));
    }
    all_alive(&nodes, &ids).await;
    send(
        http().put(format!("{}/cluster/faults", nodes[0].url)),
        Some(b"[]"),
    )
    .await
    .assert_error(400, "bad_request");
    let urls: Vec<String> = nodes.iter().map(|s| s.url.clone()).collect();

    // Writers: unique paths (each acked value must be found), and a few
    // shared paths overwritten from every node (owners must agree).
    let stop = Rc::new(RefCell::new(false));
    let acked: Rc<RefCell<BTreeMap<String, String>>> = Rc::default();
    let mut writers = Vec::new();
    for w in 0..4usize {
        let (stop, acked, urls) = (stop.clone(), acked.clone(), urls.clone());
        writers.push(actix_web::rt::spawn(async move {
            let mut n = 0usize;
            while !*stop.borrow() {
                let url = &urls[(w + n) % urls.len()];
                let path = format!("chaos/{w}/{n}");
                let value = format!("v{w}-{n}");
                if let Some(200 | 201) =
                    try_put(&format!("{url}/raw/{path}?w=quorum"), &value).await
                {
                    acked.borrow_mut().insert(path, value);
                }
                if n % 5 == 0 {
                    let shared = format!("{url}/raw/shared/{}", n % 7);
                    let _ = try_put(&shared, &format!("s{w}-{n}")).await;
                }
                n += 1;
            }
            n
        }));
    }

    let started = Instant::now();
    let mut faults = 0;
    while started.elapsed() < CHAOS {
        let victim = rng.below(NODES as u64) as usize;
        let hold = Duration::from_millis(500 + rng.below(1500));
        if rng.below(2) == 0 {
            nodes[victim].kill9();
            actix_web::rt::time::sleep(hold).await;
            nodes[victim].restart();
        } else {
            let other = (victim + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
            cut(&nodes[victim], &[&ids[other]]).await;
            cut(&nodes[other], &[&ids[victim]]).await;
            actix_web::rt::time::sleep(hold).await;
            cut(&nodes[victim], &[]).await;
            cut(&nodes[other], &[]).await;
        }
        faults += 1;
        // One fault at a time: the cluster is whole again before the next
        // (every member alive, and every link back, so streams resume).
        all_alive(&nodes, &ids).await;
        linked(&nodes).await;
    }
    *stop.borrow_mut() = true;
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    let acked = acked.borrow().clone();
    println!(
        "{faults} faults, {written} writes tried, {} acked",
        acked.len()
    );
    assert!(faults >= 5, "too few faults in the run: {faults}");
    assert!(acked.len() > 100, "too few acked writes: {}", acked.len());

    // Every acked write at every owner, and owners agree on shared paths.
    let layout = Layout::new(64, 2).unwrap();
    let placement = owners(&nodes[0]).await;
    let by_id: BTreeMap<&str, &Server> = ids.iter().map(String::as_str).zip(&nodes).collect();
    let check = async || {
        for (path, value) in &acked {
            let part = layout.partition_of(&Path::parse_key(path).unwrap());
            for owner in &placement[usize::from(part)] {
                let s = by_id[owner.as_str()];
                let r = get(&format!("{}/raw/{path}?local=true", s.url)).await;
                if r.status != 200 || r.body != value.as_bytes() {
                    println!("{path} at {owner}: {} {:?}", r.status, r.body);
                    return false;
                }
            }
        }
        for k in 0..7 {
            let path = format!("shared/{k}");
            let part = layout.partition_of(&Path::parse_key(&path).unwrap());
            let mut seen = Vec::new();
            for owner in &placement[usize::from(part)] {
                let s = by_id[owner.as_str()];
                let r = get(&format!("{}/raw/{path}?local=true", s.url)).await;
                seen.push((r.status, r.header("etag")));
            }
            if seen.windows(2).any(|w| w[0] != w[1]) {
                println!("{path}: owners disagree: {seen:?}");
                return false;
            }
        }
        true
    };
    wait_for(
        "every acked write at every owner",
        Duration::from_secs(30),
        check,
    )
    .await;
}
