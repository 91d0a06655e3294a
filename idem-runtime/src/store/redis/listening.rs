//! The Redis store's listening for the end of claims: an owner's completion or release
//! publishes on the key's channel (in the same script), and each store that waits for keys keeps
//! one subscriber connection, shared by every key it waits for, that wakes their listeners.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt as _;
use redis::aio::PubSubSink;
use tokio::sync::Notify;

use super::connection::Connection;
use super::scripts::scripts;
use super::RedisStore;
use crate::store::{Listener, RecordKey};

/// Per channel, what wakes its listeners, how many they are, and the subscriber connection it
/// was subscribed on (set once it is).
type Channels = HashMap<Vec<u8>, (Arc<Notify>, usize, Option<PubSubSink>)>;

impl RedisStore {
    /// [`Store::listen`](crate::store::Store::listen): subscribed first, then the claim marked as
    /// waited for, so that its end is published only when someone listens for it and a miss
    /// nobody waits for publishes nothing.
    pub(super) async fn listen_for(&self, key: &RecordKey) -> Option<Listener> {
        let listener = self.shared.listening.as_ref()?.listen(self.keys.record(key)).await?;
        let max_lease = self.shared.max_lease_ms.load(Ordering::Relaxed);
        let reply = self.invoke(self.invocation(&scripts().waited, key, max_lease)).await;
        match reply.as_deref() {
            Ok([forgot, _]) => {
                self.noticed(forgot, max_lease).await;
                Some(listener)
            }
            _ => None,
        }
    }

    /// Whether a completion or release publishes on the key's channel (when a request waits for
    /// it): not on a cluster, where a publish from a script would reach every node and waiting
    /// requests poll.
    pub(super) fn publishes(&self) -> &'static str {
        match self.conn {
            Connection::Single(_) => "1",
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(_) => "",
        }
    }
}

/// A store's listening: the client it opens its subscriber connection with, that connection
/// while it lives, and the channels listened to.
pub(super) struct Listening {
    client: redis::Client,
    subscriber: tokio::sync::Mutex<Option<Subscriber>>,
    channels: Arc<Mutex<Channels>>,
}

/// One subscriber connection: subscribe and unsubscribe through `sink`; its messages are read
/// by a task of its own, which sets `ended` when the connection is gone.
#[derive(Clone)]
struct Subscriber {
    sink: PubSubSink,
    ended: Arc<AtomicBool>,
}

impl Listening {
    pub(super) fn new(client: redis::Client) -> Self {
        Self { client, subscriber: tokio::sync::Mutex::default(), channels: Arc::default() }
    }

    /// A listener for `channel`, subscribed when the future is ready: every publish on it from
    /// then on wakes the listener. `None` when Redis cannot be subscribed to now (the request
    /// polls).
    pub(super) async fn listen(&self, channel: Vec<u8>) -> Option<Listener> {
        let (woken, first) = {
            let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = channels.entry(channel.clone()).or_insert_with(|| (Arc::new(Notify::new()), 0, None));
            entry.1 += 1;
            (entry.0.clone(), entry.1 == 1)
        };
        // Made first: a subscription that fails is counted out again when it is dropped.
        let registration = Registration { channel: channel.clone(), channels: self.channels.clone() };
        if !first {
            return Some(Listener::new(woken, registration));
        }
        let mut subscriber = self.subscriber().await?;
        if let Err(error) = subscriber.sink.subscribe(&channel).await {
            tracing::debug!(target: "idem", %error, "could not subscribe to a key's channel; the waiting request polls");
            return None;
        }
        if let Some(entry) = self.channels.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&channel) {
            entry.2 = Some(subscriber.sink);
        }
        Some(Listener::new(woken, registration))
    }

    /// The live subscriber connection, opened (with the task that reads it) when there is none.
    async fn subscriber(&self) -> Option<Subscriber> {
        let mut current = self.subscriber.lock().await;
        if let Some(subscriber) = current.as_ref().filter(|s| !s.ended.load(Ordering::SeqCst)) {
            return Some(subscriber.clone());
        }
        let pubsub = match self.client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(error) => {
                tracing::debug!(target: "idem", %error, "could not open a subscriber connection; waiting requests poll");
                return None;
            }
        };
        let (sink, mut messages) = pubsub.split();
        let ended = Arc::new(AtomicBool::new(false));
        let (channels, ended_by_task) = (self.channels.clone(), ended.clone());
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let channels = channels.lock().unwrap_or_else(PoisonError::into_inner);
                let channel: Vec<u8> = message.get_channel().unwrap_or_default();
                if let Some((woken, _, _)) = channels.get(&channel) {
                    woken.notify_waiters();
                }
            }
            // The connection is gone: every waiting request looks at its key now, and polls
            // from then on; the next request to wait opens a new connection.
            ended_by_task.store(true, Ordering::SeqCst);
            for (woken, _, _) in channels.lock().unwrap_or_else(PoisonError::into_inner).values() {
                woken.notify_waiters();
            }
        });
        let subscriber = Subscriber { sink, ended };
        *current = Some(subscriber.clone());
        Some(subscriber)
    }
}

/// One listener's registration: the last one of a channel to go unsubscribes it.
struct Registration {
    channel: Vec<u8>,
    channels: Arc<Mutex<Channels>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let sink = {
            let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            match channels.get_mut(&self.channel) {
                Some(entry) if entry.1 > 1 => {
                    entry.1 -= 1;
                    None
                }
                Some(_) => channels.remove(&self.channel).and_then(|(_, _, sink)| sink),
                None => None,
            }
        };
        let (Some(mut sink), Ok(runtime)) = (sink, tokio::runtime::Handle::try_current()) else { return };
        let channel = std::mem::take(&mut self.channel);
        drop(runtime.spawn(async move {
            let _ = sink.unsubscribe(&channel).await;
        }));
    }
}
