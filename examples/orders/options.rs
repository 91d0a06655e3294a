//! The demo's command line.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug)]
pub(super) struct Options {
    pub(super) addr: SocketAddr,
    pub(super) store: String,
    pub(super) orders_db: Option<String>,
    pub(super) handler_delay: Duration,
    pub(super) fail_first: u64,
    /// The payment provider's base URL; the demo's own address when not given.
    pub(super) provider: Option<String>,
}

const USAGE: &str = "usage: orders [--addr 127.0.0.1:3000] \
     [--store memory|redis://HOST:PORT|redis-cluster://HOST:PORT[,HOST:PORT…]|postgres://USER@HOST:PORT/DB] \
     [--orders-db postgres://USER@HOST:PORT/DB] [--handler-delay-ms N] [--fail-first N] [--provider http://HOST:PORT]";

pub(super) fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        addr: "127.0.0.1:3000".parse().expect("valid address"),
        store: "memory".to_owned(),
        orders_db: None,
        handler_delay: Duration::ZERO,
        fail_first: 0,
        provider: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--addr" => options.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--store" => options.store = value()?,
            "--orders-db" => options.orders_db = Some(value()?),
            "--handler-delay-ms" => {
                options.handler_delay =
                    Duration::from_millis(value()?.parse().map_err(|e| format!("--handler-delay-ms: {e}"))?)
            }
            "--fail-first" => options.fail_first = value()?.parse().map_err(|e| format!("--fail-first: {e}"))?,
            "--provider" => {
                let url = value()?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("--provider {url}: expected http://HOST:PORT"));
                }
                options.provider = Some(url.trim_end_matches('/').to_owned())
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(options)
}
