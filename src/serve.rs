//! `spread serve`: open the node, serve HTTP until SIGINT/SIGTERM, then stop
//! the node (flushing every acknowledged write).

use std::net::TcpListener;
use std::time::Duration;

use anyhow::Context;
use spread_actors::{ClusterConfig, Config, Node};
use spread_web::auth::Auth;
use spread_web::WebConfig;

use crate::cli::ServeArgs;

/// Runs a node until it is told to stop.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::new(&args.data);
    config.node_id = args.node_id.clone();
    config.durability = args.durability;
    config.batch_interval = Duration::from_millis(args.batch_interval_ms);
    config.lazy_flush_interval = Duration::from_millis(args.lazy_flush_ms.max(1));
    config.cache_bytes = args.cache_mb.max(1) << 20;
    config.partitions = args.partitions;
    config.shard_depth = args.shard_depth;
    config.log_retention = args.log_retention;
    config.history_keep_versions = args
        .history_keep_versions
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    config.history_keep_days = args.history_keep_days;
    config.compaction_interval =
        std::time::Duration::from_millis(args.compaction_interval_ms.max(1));
    config.ping_interval = Duration::from_millis(args.ping_interval_ms.max(10));
    config.subscriber_queue_items = args.subscriber_queue_items;
    config.subscriber_queue_bytes = args.subscriber_queue_bytes;
    config.max_subscriptions_per_session = args.max_subscriptions.max(1);
    config.max_future_skew = Duration::from_secs(args.max_future_skew_secs);
    // Bound first: a node in a cluster tells its peers the address.
    let listener = listen(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    config.cluster = cluster_config(&args, addr)?;
    let node = Node::open(config)
        .with_context(|| format!("opening the store in {}", args.data.display()))?;
    let mut web = WebConfig {
        // Signals are handled below: a node leaves its cluster before it
        // stops serving.
        handle_signals: false,
        max_body_bytes: args.max_body_bytes,
        ws_max_frame_bytes: args.ws_max_frame_bytes,
        ws_max_writes_in_flight: args.ws_max_writes_in_flight.max(1),
        ..WebConfig::default()
    };
    if let Some(w) = args.workers {
        web.workers = w.max(1);
    }
    web.cors_origins = args.cors_origin.clone();
    web.max_streams = args.max_streams.max(1);
    web.stream_send_buffer_bytes = args.stream_send_buffer_bytes;
    web.max_connections = args.max_connections.max(1);
    web.request_timeout = Duration::from_millis(args.request_timeout_ms.max(1));
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        web.tls = Some(
            spread_web::tls::server_config(cert, key).context("loading --tls-cert / --tls-key")?,
        );
    }
    let plain = match &args.listen_plain {
        Some(a) => Some(listen(a).with_context(|| format!("listening on {a}"))?),
        None => None,
    };
    let plain_addr = plain
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .context("reading the plain address")?;
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    match &args.jwt_key {
        Some(key) => {
            web.auth = Auth::new(key, args.jwt_iss.as_deref(), args.jwt_leeway_secs).context("loading --jwt-key")?;
            log::info!("tokens required (--jwt-key set)");
        }
        None => log::warn!(
            "NO --jwt-key: this node is OPEN to every client that can reach {addr} (reads and writes)"
        ),
    }
    let peer_tls = match &args.peer_ca {
        Some(ca) => Some(std::sync::Arc::new(
            spread_web::tls::peer_client_config(ca).context("loading --peer-ca")?,
        )),
        None => None,
    };
    if peer_tls.is_none() {
        if let Some(tls_peer) = args.join.iter().find(|j| spread_web::dial::peer_url(j).1) {
            anyhow::bail!(
                "--join {tls_peer} is a TLS peer: give --peer-ca to check its certificate"
            );
        }
    }
    let system = actix_web::rt::System::new();
    let result = system.block_on(async {
        // The cluster's actors first: a peer may link as soon as the server
        // accepts. Membership dials the --join nodes, then every member it
        // learns of (the listener is bound already: whoever dials back
        // waits in its queue for the server).
        spread_web::cluster::start(&node, peer_tls.clone());
        let server = spread_web::server(node.clone(), web, listener, plain)
            .context("starting the HTTP server")?;
        // The harness and scripts read this line to learn the port.
        println!(
            "spread: node {} listening on {scheme}://{addr}",
            node.node_id()
        );
        if let Some(p) = plain_addr {
            println!(
                "spread: node {} also listening on http://{p}",
                node.node_id()
            );
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        actix_web::rt::spawn(stop_on_signal(node.clone(), server.handle()));
        server.await.context("serving HTTP")
    });
    node.shutdown();
    log::info!("node stopped");
    result
}

/// Waits for SIGINT or SIGTERM, then leaves the cluster (the other members
/// mark this node dead at once instead of after their timeout) and stops
/// the HTTP server gracefully.
async fn stop_on_signal(node: Node, server: actix_web::dev::ServerHandle) {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        log::error!("cannot listen for SIGTERM / SIGINT; stop the node with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: stopping"),
        _ = int.recv() => log::info!("SIGINT: stopping"),
    }
    if let Some(membership) = node.cluster().and_then(|c| c.membership.get()) {
        let _ = membership
            .send(spread_actors::cluster::membership::Leave)
            .await;
        // The farewell is in the links' buffers; give them a moment to
        // write it before the server closes them.
        actix_web::rt::time::sleep(std::time::Duration::from_millis(200)).await;
        log::info!("left the cluster");
    }
    server.stop(true).await;
}

/// The cluster settings of `args` (`None`: a single node), or why they
/// cannot be used.
fn cluster_config(
    args: &ServeArgs,
    bound: std::net::SocketAddr,
) -> anyhow::Result<Option<ClusterConfig>> {
    let Some(secret) = &args.cluster_secret else {
        if !args.join.is_empty() {
            anyhow::bail!(
                "--join needs --cluster-secret: nodes prove they know it before they link"
            );
        }
        log::info!("no --cluster-secret: a single node, which joins no one and accepts no peers");
        return Ok(None);
    };
    let most = spread_actors::cluster::MAX_VALUE_BYTES;
    if args.max_body_bytes > most {
        anyhow::bail!(
            "--max-body-bytes {} is more than a cluster's node takes: a value must fit one \
             peer frame to reach the other owners, so at most {most}",
            args.max_body_bytes
        );
    }
    let tls = args.tls_cert.is_some();
    let address = args.advertise.clone().unwrap_or_else(|| {
        if tls {
            format!("https://{bound}")
        } else {
            bound.to_string()
        }
    });
    let mut cluster = ClusterConfig::new(secret.clone(), address);
    cluster.id = args.cluster_id.clone();
    cluster.join = args
        .join
        .iter()
        .filter(|j| !j.is_empty())
        .cloned()
        .collect();
    cluster.heartbeat_interval = Duration::from_millis(args.peer_heartbeat_ms.max(1));
    cluster.peer_dead_after = Duration::from_millis(args.peer_timeout_ms.max(1));
    cluster.replication = args.replication;
    cluster.ack_timeout = Duration::from_millis(args.ack_timeout_ms.max(1));
    cluster.send_queue_bytes = args.peer_send_queue_bytes;
    cluster.anti_entropy_interval = std::time::Duration::from_secs(args.anti_entropy_interval);
    cluster.anti_entropy_rate = args.anti_entropy_mb_per_sec.saturating_mul(1 << 20);
    cluster.copy_cache_bytes = args.copy_cache_mb.saturating_mul(1 << 20);
    cluster.fault_injection = args.fault_injection;
    cluster.check().map_err(anyhow::Error::msg)?;
    Ok(Some(cluster))
}

/// Connections the kernel queues before `accept` (std's `bind` gives 128,
/// which overflowed when hundreds of clients connected at once).
const LISTEN_BACKLOG: i32 = 2048;

/// A listening socket on the first address `addr` resolves to that can be
/// bound, with [`LISTEN_BACKLOG`] and address reuse (a restart does not wait
/// for old connections in TIME_WAIT).
fn listen(addr: &str) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;

    let mut last = None;
    for a in addr.to_socket_addrs()? {
        let bound = Socket::new(Domain::for_address(a), Type::STREAM, Some(Protocol::TCP))
            .and_then(|socket| {
                socket.set_reuse_address(true)?;
                socket.bind(&a.into())?;
                socket.listen(LISTEN_BACKLOG)?;
                Ok(socket)
            });
        match bound {
            Ok(socket) => return Ok(socket.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to listen on")
    }))
}
