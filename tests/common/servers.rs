//! The Redis servers the tests use: the shared one, or a private one they start.

use std::time::Duration;

/// The Redis server the tests share, from `IDEM_TEST_REDIS_URL`. Without it the caller skips,
/// saying so, except under CI, where a Redis test never skips.
pub fn redis_url(test: &str) -> Option<String> {
    server_url("IDEM_TEST_REDIS_URL", "redis://127.0.0.1:6379", test)
}

/// A test server's URL from the variable `var`; without it `None` (the caller skips, saying so
/// and naming an `example` value), except under CI, where a test never skips.
pub fn server_url(var: &str, example: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!("{test}: {var} is not set under CI"),
        _ => {
            eprintln!("skipped {test}: set {var}={example} to run it");
            None
        }
    }
}

/// A private `redis-server` on a free loopback port, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
    /// With persistence: the data directory (an append-only file synced on every write).
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one, or skips (saying so) when `redis-server` is not installed outside CI.
    pub fn start(test: &str) -> Option<Self> {
        let available = std::process::Command::new("redis-server")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            assert!(std::env::var_os("CI").is_none(), "{test}: redis-server is not installed under CI");
            eprintln!("skipped {test}: redis-server is not installed");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self { port, child: None, dir: None };
        server.resume();
        Some(server)
    }

    /// Like [`RedisServer::start`], but what it holds survives a stop and resume.
    pub fn start_persistent(test: &str) -> Option<Self> {
        let mut server = Self::start(test)?;
        server.stop();
        let dir = std::env::temp_dir().join(format!("idem-redis-{}-{}", std::process::id(), server.port));
        std::fs::create_dir_all(&dir).unwrap();
        server.dir = Some(dir);
        server.resume();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its data is gone).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn resume(&mut self) {
        assert!(self.child.is_none());
        let mut command = std::process::Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""]);
        match &self.dir {
            Some(dir) => command.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"]).arg(dir),
            None => command.args(["--appendonly", "no"]),
        };
        let child = command.stdout(std::process::Stdio::null()).spawn().expect("redis-server starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ready = redis::Client::open(self.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ready {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "redis-server did not answer on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Loses the response of the first `lose` connections: forwards the request, waits for the
/// server's answer, then closes the client's connection without it.
pub async fn lossy_proxy(upstream: std::net::SocketAddr, lose: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut client, _)) = listener.accept().await else { return };
            let mut server = tokio::net::TcpStream::connect(upstream).await.unwrap();
            n += 1;
            if n > lose {
                tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                continue;
            }
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                let (mut client_read, _client_write) = client.split();
                let (mut server_read, mut server_write) = server.split();
                let forward = async {
                    let mut buf = [0u8; 8192];
                    loop {
                        match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if server_write.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                };
                let mut answer = [0u8; 1];
                tokio::select! {
                    _ = forward => {}
                    _ = server_read.read(&mut answer) => {}
                }
                // Dropping both halves closes the client's connection: the response is lost.
            });
        }
    });
    addr
}

/// A UUIDv7 key minted at `at` (to the millisecond).
pub fn v7_at(at: std::time::SystemTime) -> String {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, since.as_secs(), since.subsec_nanos());
    uuid::Uuid::new_v7(ts).hyphenated().to_string()
}

/// A fresh key in the layout of a UUIDv4: no time in it.
pub fn v4() -> String {
    let mut key = v7_at(std::time::SystemTime::now());
    key.replace_range(14..15, "4");
    key
}
