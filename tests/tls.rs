//! TLS: HTTPS with HTTP/2 by ALPN, WSS subscriptions, and plain HTTP kept
//! off the TLS port — with a certificate generated for the test.

mod common;

use std::sync::Arc;

use common::*;

/// A self-signed certificate for 127.0.0.1 / localhost, written as PEM files.
struct Cert {
    dir: tempfile::TempDir,
    der: rustls_pki_types::CertificateDer<'static>,
}

impl Cert {
    fn new() -> Cert {
        let dir = tempfile::tempdir().unwrap();
        let generated =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                .unwrap();
        std::fs::write(dir.path().join("cert.pem"), generated.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            generated.signing_key.serialize_pem(),
        )
        .unwrap();
        Cert {
            der: generated.cert.der().clone(),
            dir,
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn server(&self, extra: &[&str]) -> Server {
        let (cert, key) = (self.file("cert.pem"), self.file("key.pem"));
        let mut args = vec!["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// An awc client trusting only this certificate, speaking HTTP/1.1 (a
    /// WebSocket cannot tunnel through an h2 connection in awc).
    fn client(&self) -> awc::Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        awc::Client::builder()
            // Not `max_http_version`: in awc it replaces this TLS connector
            // with a default one. ALPN above already says HTTP/1.1.
            .connector(awc::Connector::new().rustls_0_23(Arc::new(config)))
            .disable_timeout()
            .finish()
    }
}

#[actix_web::test]
async fn https_serves_http2_and_wss_round_trips() {
    let cert = Cert::new();
    let s = cert.server(&[]);
    assert!(s.url.starts_with("https://"), "{}", s.url);
    let client = cert.client();

    // A WSS subscription first, so the write below is streamed to it.
    let (_res, mut conn) = client
        .ws(format!("wss://{}/wss/tls", s.addr))
        .connect()
        .await
        .expect("wss connect");
    use futures_util::{SinkExt, StreamExt};
    let ready = actix_web::rt::time::timeout(EVENT_DEADLINE, conn.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        matches!(&ready, awc::ws::Frame::Text(t) if t.starts_with(b"{\"type\":\"ready\"")),
        "{ready:?}"
    );

    let mut put = client
        .put(format!("{}/raw/tls/x", s.url))
        .send_body("secure")
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let _ = put.body().await;
    let update = actix_web::rt::time::timeout(EVENT_DEADLINE, conn.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match update {
        awc::ws::Frame::Text(t) => {
            let v: serde_json::Value = serde_json::from_slice(&t).unwrap();
            assert_eq!(
                (v["type"].as_str(), v["value"].as_str()),
                (Some("update"), Some("secure"))
            );
        }
        other => panic!("expected an update, got {other:?}"),
    }
    let _ = conn.send(awc::ws::Message::Close(None)).await;

    // HTTP/2 by ALPN, with a client we did not write.
    if have_tool("curl") {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "--http2",
                "--cacert",
                &cert.file("cert.pem"),
                "-w",
                "\n%{http_version}",
            ])
            .arg(format!(
                "https://localhost:{}/raw/tls/x",
                s.addr.rsplit(':').next().unwrap()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text, "secure\n2", "curl --http2 over TLS: {text}");
    }
}

#[actix_web::test]
async fn plain_http_to_the_tls_port_fails_cleanly_and_listen_plain_serves_plain() {
    let cert = Cert::new();
    let s = cert.server(&["--listen-plain", "127.0.0.1:0"]);
    let answer = raw_request(
        &s.addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        !answer.contains("\"ok\""),
        "plain HTTP must not be served on the TLS port: {answer}"
    );

    let plain = s.next_announced();
    assert!(plain.starts_with("http://"), "{plain}");
    assert_eq!(put(&format!("{plain}/raw/p/x"), b"plain").await.status, 201);
    let mut over_tls = cert
        .client()
        .get(format!("{}/raw/p/x", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        over_tls.status().as_u16(),
        200,
        "the TLS port keeps serving"
    );
    assert_eq!(&over_tls.body().await.unwrap()[..], b"plain");
}

#[actix_web::test]
async fn a_bad_certificate_file_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spread"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--tls-cert") && err.contains("cert.pem"),
        "{err}"
    );
}
