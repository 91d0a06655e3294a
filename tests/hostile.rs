//! Hostile input on a real socket: oversized headers are refused by the HTTP server before any
//! extractor or handler sees the request (idem buffers nothing for them).

mod common;

use std::io::{Read as _, Write as _};

use common::app;

fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let _ = stream.write_all(request);
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_a_4xx_and_run_nothing() {
    let (app, hits) = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let huge_key = "k".repeat(1 << 20);
    let many: String = (0..200).map(|i| format!("X-Filler-{i}: {i}\r\n")).collect();
    for head in [
        format!("POST /required HTTP/1.1\r\nHost: t\r\nIdempotency-Key: {huge_key}\r\nContent-Length: 2\r\n\r\n{{}}"),
        format!("POST /required HTTP/1.1\r\nHost: t\r\nIdempotency-Key: k\r\n{many}Content-Length: 2\r\n\r\n{{}}"),
    ] {
        let response = tokio::task::spawn_blocking(move || raw(addr, head.as_bytes())).await.unwrap();
        let status: u16 = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!((400..500).contains(&status), "expected a 4xx, got: {}", response.lines().next().unwrap_or(""));
    }
    assert_eq!(hits.get("required"), 0);
}
