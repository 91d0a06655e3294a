//! What the crash tests share: a database of their own, requests that survive the server dying
//! under them, and a seeded random source.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sqlx::{Connection as _, Executor as _};

/// A database of its own on the test server, dropped afterwards.
pub struct Database {
    admin_url: String,
    name: String,
    pub url: String,
}

impl Database {
    pub fn create(admin_url: &str, runtime: &tokio::runtime::Runtime) -> Self {
        let name = format!("idem_crash_{}", &idem_runtime::testkit::fresh_key().to_hex()[..12]);
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(admin_url).await.unwrap();
            conn.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        });
        let (base, _) = admin_url.rsplit_once('/').expect("a URL ending in /DATABASE");
        Self { admin_url: admin_url.to_owned(), url: format!("{base}/{name}"), name }
    }

    pub fn drop_now(&self, runtime: &tokio::runtime::Runtime) {
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            if let Err(e) = conn.execute(drop.as_str()).await {
                eprintln!("could not drop the test database {}: {e}", self.name);
            }
        });
    }
}

/// One request on a fresh connection; `None` when the connection failed or broke (the
/// instance died under it).
pub fn try_post(addr: SocketAddr, path: &str, key: &str, body: &str) -> Option<(u16, bool, String)> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer crash\r\n\
Content-Type: application/json\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let replayed = head.lines().any(|line| line.eq_ignore_ascii_case("idempotent-replayed: true"));
    Some((status, replayed, body.to_owned()))
}

/// Posts until the answer is 201, to each of `addrs` in turn (a 409, a 503 or a connection the
/// instance dropped: again 100 ms later), within a minute; the 201's body.
pub fn post_until_201(addrs: &[SocketAddr], path: &str, key: &str, body: &str) -> String {
    let started = Instant::now();
    for addr in addrs.iter().cycle() {
        assert!(started.elapsed() < Duration::from_secs(60), "{key} never got its 201");
        match try_post(*addr, path, key, body) {
            Some((201, _, body)) => return body,
            Some((409 | 503, _, _)) | None => std::thread::sleep(Duration::from_millis(100)),
            Some(other) => panic!("{key}: unexpected answer {other:?}"),
        }
    }
    unreachable!("a cycle over instances never ends")
}

/// The number of trials: `IDEM_CRASH_TRIALS`, 4 unless set.
pub fn trials() -> usize {
    std::env::var("IDEM_CRASH_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(4)
}

/// xorshift64*, seeded and printed, so a failing run can be repeated.
pub struct Random(pub u64);

impl Random {
    /// Seeded from the clock; the seed is printed with `test` and its `trials`.
    pub fn seeded(test: &str, trials: usize) -> Self {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        println!("{test}: {trials} trials, seed {seed}");
        Self(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
