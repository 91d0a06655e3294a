//! The PostgreSQL server the tests share, and a schema of its own per test.
#![allow(dead_code, unreachable_pub)]

use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_runtime::store::{PgStore, PgStoreBuilder};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{Connection as _, Executor as _};

/// The server from `IDEM_TEST_DATABASE_URL`. Without it the caller skips, saying so, except
/// under CI, where a PostgreSQL test never skips.
pub fn database_url(test: &str) -> Option<String> {
    super::common::server_url("IDEM_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test", test)
}

/// A schema `idem_test_<random>` with the store's table in it, dropped (with everything in
/// it) when this is dropped, even by a failing test.
pub struct TestSchema {
    pub url: String,
    pub name: String,
}

impl TestSchema {
    /// Creates the schema and runs the store's migration in it, or skips (see
    /// [`database_url`]).
    pub async fn create(test: &str) -> Option<Self> {
        let url = database_url(test)?;
        let name = format!("idem_test_{}", &idem_runtime::testkit::fresh_key().to_hex()[..16]);
        let schema = Self { url, name };
        let pool = schema.pool(2).await;
        schema.builder(pool.clone()).build().migrate().await.expect("the migration runs");
        pool.close().await;
        Some(schema)
    }

    /// A pool of at most `connections` on the server.
    pub async fn pool(&self, connections: u32) -> PgPool {
        self.pool_named(connections, "idem-test").await
    }

    /// A pool of at most `connections` whose sessions carry `application_name`.
    pub async fn pool_named(&self, connections: u32, application_name: &str) -> PgPool {
        let options =
            PgConnectOptions::from_str(&self.url).expect("a PostgreSQL URL").application_name(application_name);
        PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .expect("PostgreSQL is reachable")
    }

    /// A store builder on `pool` for the table in this schema.
    pub fn builder(&self, pool: PgPool) -> PgStoreBuilder {
        PgStore::builder(pool).schema(&self.name)
    }

    /// A store on a pool of its own (as another process would have).
    pub async fn store(&self) -> PgStore {
        self.builder(self.pool(8).await).build()
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // On a thread of its own: the drop may run inside a Tokio runtime, which cannot block.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                conn.execute(format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE").as_str()).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test schema {}", self.name);
        }
    }
}

/// A loopback proxy in front of the server that counts the round trips clients make through
/// it, by what ends each (a `Sync` of the extended protocol, or a simple `Query`).
pub struct CountingProxy {
    pub port: u16,
    counts: Arc<Mutex<RoundTrips>>,
}

/// Round trips by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoundTrips {
    /// Statements run (`Bind`, `Execute`, `Sync`; or a simple `Query`).
    pub statements: u64,
    /// Statements prepared (`Parse`, `Describe`, `Sync`): once per statement and connection.
    pub prepares: u64,
    /// A `Sync` alone: sqlx's ping, when it hands out a connection (unless the pool's
    /// `test_before_acquire` is off) and, in the background, when it takes one back.
    pub pings: u64,
}

impl std::ops::Sub for RoundTrips {
    type Output = Self;
    fn sub(self, before: Self) -> Self {
        Self {
            statements: self.statements - before.statements,
            prepares: self.prepares - before.prepares,
            pings: self.pings - before.pings,
        }
    }
}

impl CountingProxy {
    /// Starts one in front of the server of `url`, on the current runtime.
    pub async fn start(url: &str) -> Self {
        let upstream = PgConnectOptions::from_str(url).expect("a PostgreSQL URL");
        let upstream = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Mutex::new(RoundTrips::default()));
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (client_read, mut client_write) = client.into_split();
                let (mut server_read, server_write) = server.into_split();
                tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
                tokio::spawn(pump(client_read, server_write, shared.clone()));
            }
        });
        Self { port, counts }
    }

    /// The options of `url` pointed at the proxy, without TLS.
    pub fn options(&self, url: &str) -> PgConnectOptions {
        PgConnectOptions::from_str(url).unwrap().host("127.0.0.1").port(self.port).ssl_mode(PgSslMode::Disable)
    }

    /// The round trips so far.
    pub fn counts(&self) -> RoundTrips {
        *self.counts.lock().unwrap()
    }
}

/// Forwards a client's messages to the server, counting round trips. The first messages (a
/// TLS or GSS request, then the startup message) carry no type byte.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counts: Arc<Mutex<RoundTrips>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const PROTOCOL_3: u32 = 196_608;
    loop {
        let len = from.read_u32().await?;
        let mut body = vec![0; len as usize - 4];
        from.read_exact(&mut body).await?;
        to.write_all(&len.to_be_bytes()).await?;
        to.write_all(&body).await?;
        if body.get(..4) == Some(&PROTOCOL_3.to_be_bytes()[..]) {
            break;
        }
    }
    // The messages since the last `Sync`.
    let (mut executed, mut described) = (false, false);
    loop {
        let kind = from.read_u8().await?;
        let len = from.read_u32().await?;
        let mut body = vec![0; len as usize - 4];
        from.read_exact(&mut body).await?;
        match kind {
            b'E' => executed = true,
            b'P' | b'D' => described = true,
            b'Q' => counts.lock().unwrap().statements += 1,
            b'S' => {
                let mut counts = counts.lock().unwrap();
                match (executed, described) {
                    (true, _) => counts.statements += 1,
                    (false, true) => counts.prepares += 1,
                    (false, false) => counts.pings += 1,
                }
                (executed, described) = (false, false);
            }
            _ => {}
        }
        to.write_all(&[kind]).await?;
        to.write_all(&len.to_be_bytes()).await?;
        to.write_all(&body).await?;
    }
}
