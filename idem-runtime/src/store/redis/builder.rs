//! Configuring and connecting a [`RedisStore`].

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::connection::Connection;
use super::layout::{valid_prefix, KeySpace};
use super::listening::Listening;
use super::owners::Owners;
use super::scripts::scripts;
use super::{millis, unavailable, RedisStore, Shared};
use crate::store::{Clock, StoreError, DEFAULT_MAX_BODY_BYTES};

/// Where a [`RedisStore`] gets its connection.
#[derive(Clone)]
pub(super) enum Source {
    /// A URL: the store opens a client and a connection manager with its own timeouts.
    Url(String),
    /// The application's client: the store opens a connection manager on it.
    Client(redis::Client),
    /// The application's connection manager, used as it is (its timeouts and retries too).
    Manager(ConnectionManager),
    /// A Redis Cluster's nodes (some or all): the store opens a cluster client with its own
    /// timeouts.
    #[cfg(feature = "redis-cluster")]
    ClusterNodes(Vec<String>),
    /// The application's cluster client: the store opens a connection on it.
    #[cfg(feature = "redis-cluster")]
    ClusterClient(Box<redis::cluster::ClusterClient>),
    /// The application's cluster connection, used as it is.
    #[cfg(feature = "redis-cluster")]
    ClusterConnection(redis::cluster_async::ClusterConnection),
}

/// Configures a [`RedisStore`].
#[derive(Clone)]
pub struct RedisStoreBuilder {
    source: Source,
    prefix: String,
    max_body_bytes: usize,
    timeout: Duration,
    max_lease: Duration,
    new_key_space: bool,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("prefix", &self.prefix)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("timeout", &self.timeout)
            .field("max_lease", &self.max_lease)
            .field("new_key_space", &self.new_key_space)
            .field("server_clock", &self.clock.is_none())
            .finish_non_exhaustive()
    }
}

impl RedisStoreBuilder {
    pub(super) fn new(source: Source) -> Self {
        Self {
            source,
            prefix: "idem:".to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            timeout: Duration::from_secs(1),
            max_lease: Duration::from_secs(30),
            new_key_space: false,
            clock: None,
        }
    }

    /// The prefix of every key ["idem:"]. It holds no brace: the store's keys carry a hash
    /// tag of their own after it.
    ///
    /// # Panics
    ///
    /// If `prefix` holds `{` or `}`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(
            valid_prefix(&prefix),
            "RedisStore: the prefix {prefix:?} holds a brace; the store adds its own hash tag"
        );
        self.prefix = prefix;
        self
    }

    /// The largest response body kept [1 MiB].
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// How long one connection attempt or one command may take before it counts as a failure
    /// [1 s].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest `lease` of your handlers, across the fleet sharing the key space [30 s, the
    /// default lease]. After Redis forgot its keys, no claim is granted for this long, so that
    /// every handler whose claim was forgotten either re-asserts it or has run out its lease.
    /// The store raises it to the longest lease it is asked for, so it only needs setting when
    /// some instance may run a handler with a longer lease than this instance has seen.
    pub fn max_lease(mut self, max_lease: Duration) -> Self {
        self.max_lease = max_lease;
        self
    }

    /// Declares the key space new: if its marker is missing at connect, nothing can have been
    /// lost, so no quarantine starts however recently the server started. For tests and first
    /// deployments on a server just started; never for an instance that may connect right
    /// after Redis restarted empty while other instances run handlers. A loss noticed later,
    /// while the store runs, quarantines as always.
    pub fn new_key_space(mut self) -> Self {
        self.new_key_space = true;
        self
    }

    /// Reads lease deadlines and record expiry from `clock` instead of the Redis server's
    /// clock (the default, which every instance of a fleet shares). Meant for tests driving
    /// time (`TokioClock` under `tokio::time::pause()`): each instance then passes its own
    /// clock's time to the scripts. Redis still drops expired keys on its own clock, so under
    /// an injected clock a key is kept at least an hour; the deadlines decide what is live.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Connects (failing if Redis cannot be reached now), loads the scripts and opens the key
    /// space: each bucket's marker is written if missing, with a quarantine if its server
    /// started less than `max_lease` ago (see [`RedisStore`]).
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        // A store with a client of its own also opens, when requests wait, one subscriber
        // connection to be woken by the end of the claims they wait for.
        let mut listening = None;
        let conn = match &self.source {
            Source::Url(url) => {
                let client = redis::Client::open(url.as_str()).map_err(unavailable)?;
                listening = Some(Listening::new(client.clone()));
                self.manager(client).await?
            }
            Source::Client(client) => {
                listening = Some(Listening::new(client.clone()));
                self.manager(client.clone()).await?
            }
            Source::Manager(conn) => Connection::Single(conn.clone()),
            #[cfg(feature = "redis-cluster")]
            Source::ClusterNodes(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(self.timeout)
                    .response_timeout(self.timeout)
                    .build()
                    .map_err(unavailable)?;
                Connection::Cluster(client.get_async_connection().await.map_err(unavailable)?)
            }
            #[cfg(feature = "redis-cluster")]
            Source::ClusterClient(client) => {
                Connection::Cluster(client.get_async_connection().await.map_err(unavailable)?)
            }
            #[cfg(feature = "redis-cluster")]
            Source::ClusterConnection(conn) => Connection::Cluster(conn.clone()),
        };
        self.open(conn, listening).await
    }

    /// A connection manager on `client` with the builder's timeout.
    async fn manager(&self, client: redis::Client) -> Result<Connection, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        Ok(Connection::Single(ConnectionManager::new_with_config(client, config).await.map_err(unavailable)?))
    }

    /// The store on `conn`: loads the scripts and opens the key space.
    async fn open(self, mut conn: Connection, listening: Option<Listening>) -> Result<RedisStore, StoreError> {
        for script in scripts().all() {
            script.load_async(&mut conn).await.map_err(unavailable)?;
        }
        let store = RedisStore {
            conn,
            keys: Arc::new(KeySpace::new(&self.prefix)),
            max_body_bytes: self.max_body_bytes,
            clock: self.clock,
            shared: Arc::new(Shared {
                max_lease_ms: AtomicU64::new(millis(self.max_lease, 0)),
                owners: Owners::default(),
                spreading: AtomicBool::new(false),
                listening,
            }),
        };
        store.open_key_space(self.new_key_space).await?;
        Ok(store)
    }
}
