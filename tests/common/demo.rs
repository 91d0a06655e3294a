//! The demo (and the other examples) as real processes, and requests to the demo as a client
//! sends them.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{wire, Wire};

pub const JSON: (&str, &str) = ("Content-Type", "application/json");

/// The demo binary, built on demand next to this test's own binary.
pub fn demo_binary() -> PathBuf {
    example_binary("orders")
}

/// An example's binary, built on demand next to this test's own binary.
pub fn example_binary(name: &str) -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the demo failed");
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

pub struct Demo {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(args: &[&str]) -> Demo {
    let mut child = Command::new(demo_binary())
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("demo starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|s| s.split_whitespace().next()).expect(&line);
    Demo { child, addr: addr.parse().unwrap() }
}

/// `POST /orders` as `token`, with `key` if given.
pub fn create(demo: &Demo, token: &str, key: Option<&str>, body: &str) -> Wire {
    create_with(demo, token, key, &[], body)
}

/// `POST /orders` as `token`, with `key` if given and the `extra` headers.
pub fn create_with(demo: &Demo, token: &str, key: Option<&str>, extra: &[(&str, &str)], body: &str) -> Wire {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str()), JSON];
    if let Some(key) = key {
        headers.push(("Idempotency-Key", key));
    }
    headers.extend_from_slice(extra);
    wire(demo.addr, "POST", "/orders", &headers, body)
}

/// `GET /orders` as `token`: the caller's orders.
pub fn orders(demo: &Demo, token: &str) -> serde_json::Value {
    let auth = format!("Bearer {token}");
    wire(demo.addr, "GET", "/orders", &[("Authorization", &auth)], "").json()
}

/// A token no earlier run used: records in a shared Redis outlive a test run.
pub fn unique_token(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("idem-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The demo's OpenAPI document, fetched without authorization, and the file it is written to.
pub fn openapi_document(demo: &Demo, scratch: &Scratch) -> (serde_json::Value, PathBuf) {
    let reply = wire(demo.addr, "GET", "/openapi.json", &[], "");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let file = scratch.0.join("openapi.json");
    std::fs::write(&file, &reply.body).unwrap();
    (reply.json(), file)
}
