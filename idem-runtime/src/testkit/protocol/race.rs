//! An owner releasing its claim while one of its own renewals or completions, sent just before,
//! is still on its way to the store (a remote store may run it after the release: a reconnect,
//! a script reloaded after a restart). The model accepts either order of their effects, and a
//! claim put back after the release in neither.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use proptest::strategy::{BoxedStrategy, Strategy};

use super::model::Model;
use super::run::{record_for, unexpected_error};
use super::{LEASES_MS, TTLS_MS};
use crate::record::Record;
use crate::store::Store;

/// The operation on its way when its owner releases.
#[derive(Clone, Copy, Debug)]
pub(super) enum Racing {
    Renew { lease: usize },
    Complete { ttl: usize, body: bool },
}

pub(super) fn racing() -> BoxedStrategy<Racing> {
    proptest::prop_oneof![
        (0..LEASES_MS.len()).prop_map(|lease| Racing::Renew { lease }),
        (0..TTLS_MS.len(), proptest::bool::weighted(0.8)).prop_map(|(ttl, body)| Racing::Complete { ttl, body }),
    ]
    .boxed()
}

/// What the racing step did: its log line and the answers to tally.
pub(super) struct Raced {
    pub(super) log: String,
    pub(super) answers: [&'static str; 3],
}

/// The racing operation as it was sent: a renewal for a lease, or a completion with a record.
enum Late {
    Renew(u64),
    Complete(Record),
}

/// Runs the step: `owner`'s racing operation is sent (polled once), then the release, which is
/// awaited first; then the racing operation's answer. Checks both answers against the model in
/// either order of their effects.
pub(super) async fn release_racing<S: Store>(
    store: &S,
    model: &mut Model,
    owner: usize,
    racing: Racing,
) -> Result<Raced, String> {
    let o = &model.owners[owner];
    let (key, token) = (model.keys[o.key].key, o.token);
    let late = match racing {
        Racing::Renew { lease } => Late::Renew(LEASES_MS[lease]),
        Racing::Complete { ttl, body } => Late::Complete(
            o.pending.clone().unwrap_or_else(|| record_for(owner, o.fingerprint, model.now, TTLS_MS[ttl], body)),
        ),
    };
    let sent = async {
        match &late {
            Late::Renew(lease) => store.renew(&key, token, Duration::from_millis(*lease)).await,
            Late::Complete(record) => store.complete(&key, token, record.clone()).await,
        }
    };
    let mut sent = pin!(sent);
    let early = std::future::poll_fn(|cx| {
        Poll::Ready(match sent.as_mut().poll(cx) {
            Poll::Ready(answer) => Some(answer),
            Poll::Pending => None,
        })
    })
    .await;
    let released = store.release(&key, token).await;
    let late_answer = match early {
        Some(answer) => answer,
        None => sent.await,
    };
    let what = match &late {
        Late::Renew(lease) => format!("a renewal for {lease}"),
        Late::Complete(record) => {
            format!("a completion, ttl left {}", super::model::ms(record.expires_at).saturating_sub(model.now))
        }
    };
    let log = format!("owner {owner} releases ({released:?}) while {what} is on its way ({late_answer:?})");
    unexpected_error(&released).and(unexpected_error(&late_answer)).map_err(|error| format!("{log}: {error}"))?;
    let apply_late = |model: &mut Model| match &late {
        Late::Renew(lease) => model.renew(owner, *lease, &late_answer),
        Late::Complete(record) => model.complete(owner, record, &late_answer),
    };
    // A store may learn the renewal's lease when it is sent, before the release takes effect.
    if let Late::Renew(lease) = late {
        model.reach(false, Some(lease));
    }
    let mut late_first = model.clone();
    let first = apply_late(&mut late_first).and_then(|a| {
        Ok([a, late_first.release(owner, &released)?, "release racing: took effect after its operation"])
    });
    let first_error = match first {
        Ok(answers) => {
            *model = late_first;
            model.owners[owner].active = false;
            return Ok(Raced { log, answers });
        }
        Err(error) => error,
    };
    let mut release_first = model.clone();
    let second = release_first
        .release(owner, &released)
        .and_then(|a| Ok([a, apply_late(&mut release_first)?, "release racing: overtook its operation"]));
    match second {
        Ok(answers) => {
            *model = release_first;
            model.owners[owner].active = false;
            Ok(Raced { log, answers })
        }
        Err(error) => Err(format!(
            "{log}: no order of the two explains their answers (the racing operation first: {first_error}; \
             the release first: {error})"
        )),
    }
}
