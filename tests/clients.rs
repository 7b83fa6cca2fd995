//! Clients we did not write: Python's `websockets` library talking to the
//! WebSocket endpoint, as a user's script would.

mod common;

use common::*;

const PY_CLIENT: &str = r#"
import asyncio, json, sys
import websockets

async def main(url):
    out = {"first": [], "after_set": [], "error": None}
    async with websockets.connect(url) as ws:
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            out["first"].append(frame)
            if frame["type"] == "ready":
                break
        await ws.send(json.dumps({"op": "set", "path": "py/b", "value": "from python", "id": "s1"}))
        while len(out["after_set"]) < 2:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] != "ping":
                out["after_set"].append(frame)
        await ws.send("this is not json")
        out["error"] = json.loads(await asyncio.wait_for(ws.recv(), 10))
    print(json.dumps(out))

asyncio.run(main(sys.argv[1]))
"#;

#[actix_web::test]
async fn python_websockets_client_subscribes_writes_and_gets_errors() {
    if !have_tool("python3") {
        return;
    }
    let has_lib = std::process::Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_lib {
        assert!(
            std::env::var("SPREAD_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "python websockets is required (SPREAD_REQUIRE_TOOLS=1) but not installed"
        );
        eprintln!("SKIPPED: python websockets is not installed");
        return;
    }
    let s = Server::start(&[]);
    put(&s.at("raw", "py/a"), b"snap").await;
    let url = s.ws_url("py");
    let output = actix_web::rt::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", PY_CLIENT, &url])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        output.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let first = out["first"].as_array().unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(
        (first[0]["type"].as_str(), first[0]["value"].as_str()),
        (Some("snapshot"), Some("snap"))
    );
    assert_eq!(first[1]["type"], "ready");
    let mut after: Vec<&serde_json::Value> = out["after_set"].as_array().unwrap().iter().collect();
    after.sort_by_key(|f| f["type"].as_str().unwrap_or("").to_string());
    assert_eq!(
        (
            after[0]["type"].as_str(),
            after[0]["id"].as_str(),
            after[0]["status"].as_str()
        ),
        (Some("reply"), Some("s1"), Some("new"))
    );
    assert_eq!(
        (after[1]["type"].as_str(), after[1]["value"].as_str()),
        (Some("update"), Some("from python"))
    );
    assert_eq!(out["error"]["type"], "error");
    assert_eq!(out["error"]["error"], "bad_request");
    assert_eq!(&get(&s.at("raw", "py/b")).await.body[..], b"from python");
}
