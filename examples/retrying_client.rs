//! Creates one order through idem's retrying client.
//!
//! ```text
//! cargo run --example retrying_client -- --server http://127.0.0.1:3000 --token alice
//!     [--key-header X-Request-Key] [--deadline 40]
//! ```
//!
//! The client picks one `Idempotency-Key` for the call and sends it on every retry, so the
//! order is created once even when responses are lost on the way back. While the first attempt
//! may still be running (the server answers 409 with `Retry-After`), it keeps asking, for up to
//! `--deadline` seconds (default 40, longer than the server's default 30 s lease).
//! `--key-header` sends the key under the name a server accepts with
//! `#[idempotent(header = "…")]` instead. Prints the final status, the body and whether it was a
//! replay; exits 0 on a 201.

use std::process::ExitCode;
use std::time::Duration;

use idem_runtime::client::{self, ClientConfig};
use reqwest::header::HeaderName;

struct Options {
    server: String,
    token: String,
    config: ClientConfig,
}

fn parse_options() -> Result<Options, String> {
    let usage =
        "usage: retrying_client --server http://HOST:PORT --token TOKEN [--key-header NAME] [--deadline SECONDS]";
    let (mut server, mut token, mut config) = (None, None, ClientConfig::new());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{usage}"))?;
        match flag.as_str() {
            "--server" => server = Some(value),
            "--token" => token = Some(value),
            "--key-header" => {
                let name = HeaderName::try_from(value.as_str()).map_err(|_| format!("{value:?} is no header name"))?;
                config = config.key_header(name);
            }
            "--deadline" => {
                let seconds: u64 = value.parse().map_err(|_| format!("--deadline takes seconds, not {value:?}"))?;
                config = config.deadline(Duration::from_secs(seconds));
            }
            _ => return Err(format!("unknown option {flag}\n{usage}")),
        }
    }
    match (server, token) {
        (Some(server), Some(token)) => Ok(Options { server: server.trim_end_matches('/').to_owned(), token, config }),
        _ => Err(usage.to_owned()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let Options { server, token, config } = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let http = config.build(reqwest::Client::new());
    let result = http
        .post(format!("{server}/orders"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"item": "book", "qty": 1}))
        .send()
        .await;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            eprintln!("the call failed after its retries: {error}");
            return ExitCode::FAILURE;
        }
    };
    let status = response.status();
    let replayed = client::is_replayed(response.headers());
    let body = response.text().await.unwrap_or_default();
    println!("status: {status}");
    println!("body: {body}");
    println!("replayed: {replayed}");
    if status == 201 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
