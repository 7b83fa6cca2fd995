//! The `spread` binary: `serve` runs a node, the other verbs are a client.

mod backup;
mod cli;
mod client;
mod serve;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc: sled allocates on one thread and frees on another (epoch
/// reclamation), where glibc's malloc cost ~25% of durable-write throughput.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With transparent huge pages set to `always` (common on Linux), mimalloc's
/// eagerly committed arenas are backed by 2 MiB pages: measured here, ~45 MiB
/// more at start and ~8 KiB more per idle subscriber. Faults after this call
/// get normal pages.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no memory.
    let refused = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0;
    #[cfg(not(target_os = "linux"))]
    let refused = false;
    if refused {
        // Only memory use is at stake: say so and go on.
        eprintln!(
            "warning: could not disable transparent huge pages: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn main() {
    disable_transparent_huge_pages();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        other => actix_web::rt::System::new().block_on(async move {
            match other {
                Command::Get { client, path, at } => client::get(client, path, at).await,
                Command::Set {
                    client,
                    path,
                    value,
                    content_type,
                    time,
                } => client::set(client, path, value, content_type, time).await,
                Command::Del { client, path } => client::del(client, path).await,
                Command::List {
                    client,
                    prefix,
                    json,
                    at,
                } => client::list(client, prefix, json, at).await,
                Command::Watch {
                    client,
                    prefix,
                    since,
                    from,
                    to,
                    count,
                } => client::watch(client, prefix, since, (from, to), count).await,
                Command::History { client, path } => client::history(client, path).await,
                Command::Cluster { client } => client::cluster(client).await,
                Command::Export {
                    client,
                    prefix,
                    format,
                } => crate::backup::export(client, prefix, format).await,
                Command::Import {
                    client,
                    file,
                    format,
                } => crate::backup::import(client, file, format).await,
                Command::Rollback {
                    client,
                    path,
                    to,
                    recursive,
                } => client::rollback(client, path, to, recursive).await,
                Command::Repair { client, prefix } => client::repair(client, prefix).await,
                Command::Token(args) => client::token(args),
                Command::Serve(_) => unreachable!("handled above"),
            }
        }),
    };
    if let Err(e) = result {
        eprintln!("spread: {e:#}");
        std::process::exit(1);
    }
}
