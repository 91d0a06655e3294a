//! A private three-master Redis Cluster on free loopback ports, in a temporary directory,
//! stopped and removed on drop.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: PathBuf,
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port whose cluster bus port (10 000 above) is free too.
fn free_port_pair(taken: &[u16]) -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_000 && !taken.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

fn query(port: u16, args: &[&str]) -> redis::RedisResult<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn)
}

impl RedisCluster {
    /// Starts three masters and joins them into one cluster (slots split evenly, no replicas),
    /// or skips, saying so, when `redis-server` or `redis-cli` is not installed, except under
    /// CI, where a cluster test never skips.
    pub fn start(test: &str) -> Option<Self> {
        if !installed("redis-server") || !installed("redis-cli") {
            assert!(std::env::var_os("CI").is_none(), "{test}: redis-server and redis-cli must be installed under CI");
            eprintln!(
                "skipped {test}: redis-server and redis-cli (a Redis Cluster of three masters) are not installed"
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!("idem-cluster-{}-{}", std::process::id(), test.replace(' ', "-")));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut ports = Vec::new();
        for _ in 0..3 {
            ports.push(free_port_pair(&ports));
        }
        let mut cluster = Self { children: ports.iter().map(|_| None).collect(), ports, dir };
        for node in 0..3 {
            cluster.spawn(node);
        }
        let addresses: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(output.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&output.stdout));
        for node in 0..3 {
            cluster.wait_ok(node);
        }
        Some(cluster)
    }

    /// Starts node `node` on its port, with its cluster configuration file, without
    /// persistence: a restart comes back empty, serving the same slots.
    fn spawn(&mut self, node: usize) {
        assert!(self.children[node].is_none());
        let port = self.ports[node].to_string();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port, "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", "15000", "--dir"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.children[node] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while query(self.ports[node], &["PING"]).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `node` sees the cluster whole.
    fn wait_ok(&self, node: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = query(self.ports[node], &["CLUSTER", "INFO"]).unwrap_or_default();
            if info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384") {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not settle: {info}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The nodes' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }

    /// The demo's `--store` value: `redis-cluster://HOST:PORT,HOST:PORT,HOST:PORT`.
    pub fn store_arg(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    /// Which node serves `key` (by `CLUSTER KEYSLOT` and `CLUSTER SLOTS`).
    pub fn node_of(&self, key: &[u8]) -> usize {
        let client = redis::Client::open(self.urls()[0].as_str()).unwrap();
        let mut conn = client.get_connection().unwrap();
        let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut conn).unwrap();
        let ranges: Vec<(i64, i64, (String, i64))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut conn)
            .unwrap()
            .into_iter()
            .map(|range| {
                let redis::Value::Array(parts) = range else { panic!("CLUSTER SLOTS: {range:?}") };
                let from: i64 = redis::from_redis_value(parts[0].clone()).unwrap();
                let to: i64 = redis::from_redis_value(parts[1].clone()).unwrap();
                let redis::Value::Array(master) = &parts[2] else { panic!("CLUSTER SLOTS master") };
                let host: String = redis::from_redis_value(master[0].clone()).unwrap();
                let port: i64 = redis::from_redis_value(master[1].clone()).unwrap();
                (from, to, (host, port))
            })
            .collect();
        let (_, _, (_, port)) =
            ranges.iter().find(|(from, to, _)| (*from..=*to).contains(&slot)).expect("a served slot");
        self.ports.iter().position(|p| i64::from(*p) == *port).expect("one of the nodes")
    }

    /// Restarts `node` without what it held (a shard restarted without persistence), and waits
    /// until the cluster is whole again.
    pub fn restart_empty(&mut self, node: usize) {
        if let Some(mut child) = self.children[node].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.spawn(node);
        for node in 0..3 {
            self.wait_ok(node);
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().filter_map(Option::take) {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
