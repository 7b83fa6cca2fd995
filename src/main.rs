//! The `spread` binary: `serve` runs a node, the other verbs are a client.

mod cli;
mod client;
mod serve;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc: sled allocates on one thread and frees on another (epoch
/// reclamation), where glibc's malloc spent a fifth of the committer's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        other => actix_web::rt::System::new().block_on(async move {
            match other {
                Command::Get { client, path } => client::get(client, path).await,
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
                } => client::list(client, prefix, json).await,
                Command::Watch {
                    client,
                    prefix,
                    since,
                    count,
                } => client::watch(client, prefix, since, count).await,
                Command::History { client, path } => client::history(client, path).await,
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
