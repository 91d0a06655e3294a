//! Creates one order through idem's retrying client.
//!
//! ```text
//! cargo run --example retrying_client -- --server http://127.0.0.1:3000 --token alice
//! ```
//!
//! The client picks one `Idempotency-Key` for the call and sends it on every retry, so the
//! order is created once even when responses are lost on the way back. Prints the final
//! status, the body and whether it was a replay; exits 0 on a 201.

use std::process::ExitCode;

use idem_runtime::client;

fn parse_options() -> Result<(String, String), String> {
    let usage = "usage: retrying_client --server http://HOST:PORT --token TOKEN";
    let (mut server, mut token) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--server" => server = args.next(),
            "--token" => token = args.next(),
            _ => return Err(format!("unknown option {flag}\n{usage}")),
        }
    }
    match (server, token) {
        (Some(server), Some(token)) => Ok((server.trim_end_matches('/').to_owned(), token)),
        _ => Err(usage.to_owned()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let (server, token) = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let http = client::client(reqwest::Client::new());
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
