//! Running one case: each step against the store and the reference model, with the invariants
//! checked after it, and the tally of what the cases exercised.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::hash::{Hash as _, Hasher as _};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::model::{ms, Check, Granted, Holder, KeyModel, Model, OwnerModel, Quarantine, Slot};
use super::race::release_racing;
use super::{Fault, ManualClock, ProtocolReport, Step, Subject, KEYS, LEASES_MS, MODEL_MAX_LEASE, TTLS_MS};
use crate::record::{Record, StoredBody};
use crate::store::{Claim, Store, StoreError};
use crate::testkit::{fingerprint, fresh_key, record};

/// What one case did.
#[derive(Default)]
pub(super) struct Run {
    steps: u64,
    operations: u64,
    answers: BTreeMap<&'static str, u64>,
    /// Owner and operation, in order: the case's interleaving.
    interleaving: Vec<(usize, &'static str)>,
    pub(super) log: Vec<String>,
    pub(super) failure: Option<String>,
}

#[derive(Default)]
pub(super) struct Tally {
    cases: u64,
    steps: u64,
    operations: u64,
    interleavings: HashSet<u64>,
    answers: BTreeMap<&'static str, u64>,
}

impl Tally {
    pub(super) fn absorb(&mut self, run: &Run) {
        self.cases += 1;
        self.steps += run.steps;
        self.operations += run.operations;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        run.interleaving.hash(&mut hasher);
        self.interleavings.insert(hasher.finish());
        for (answer, n) in &run.answers {
            *self.answers.entry(answer).or_default() += n;
        }
    }

    pub(super) fn report(self, seed: u64) -> ProtocolReport {
        ProtocolReport {
            seed,
            cases: self.cases,
            steps: self.steps,
            operations: self.operations,
            interleavings: self.interleavings.len() as u64,
            answers: self.answers,
        }
    }
}

fn claim_answer(answer: &Result<Claim, StoreError>) -> &'static str {
    match answer {
        Ok(Claim::Acquired(_)) => "claim: acquired",
        Ok(Claim::Completed(_)) => "claim: replayed",
        Ok(Claim::Mismatch) => "claim: mismatch",
        Ok(Claim::InFlight { .. }) => "claim: in flight",
        Err(StoreError::Recovering { .. }) => "claim: recovering",
        Err(_) => "claim: error",
    }
}

fn lost_reply() -> StoreError {
    StoreError::Unavailable("injected: the reply was lost".into())
}

fn no_effect() -> StoreError {
    StoreError::Unavailable("injected: the store is unreachable".into())
}

/// Runs one operation under `fault`: the store's real answer (unless it never ran), and what
/// its caller sees.
async fn faulty<T, Fut: Future<Output = Result<T, StoreError>>>(
    fault: Fault,
    op: impl FnOnce() -> Fut,
) -> (Option<Result<T, StoreError>>, Result<(), StoreError>) {
    match fault {
        Fault::Before => (None, Err(no_effect())),
        Fault::None => (Some(op().await), Ok(())),
        Fault::After => (Some(op().await), Err(lost_reply())),
    }
}

/// What an injected outage is called in the report.
fn outage(fault: Fault) -> Option<&'static str> {
    match fault {
        Fault::None => None,
        Fault::Before => Some("outage: the operation failed without effect"),
        Fault::After => Some("outage: the operation took effect, its reply was lost"),
    }
}

pub(super) fn unexpected_error<T>(answer: &Result<T, StoreError>) -> Check {
    match answer {
        Err(StoreError::Unavailable(e)) => Err(format!("the store failed: {e}")),
        _ => Ok(()),
    }
}

pub(super) async fn run_case<S: Store>(mut subject: Subject<S>, clock: ManualClock, steps: &[Step]) -> Run {
    let mut run = Run::default();
    let keys = (0..KEYS).map(|_| KeyModel { key: fresh_key(), slot: Slot::Empty, lost: None }).collect();
    let lease_floor = MODEL_MAX_LEASE.as_millis() as u64;
    let mut model = Model {
        start: clock.ms(),
        now: clock.ms(),
        forgetting: subject.forget.is_some(),
        keys,
        owners: Vec::new(),
        max_lease: (lease_floor, lease_floor),
        quarantine: Quarantine::None,
        tokens: HashSet::new(),
    };
    for step in steps {
        if matches!(step, Step::Forget) && subject.forget.is_none() {
            continue;
        }
        let outcome = run_step(&mut subject, &clock, &mut model, &mut run, step).await;
        let outcome = outcome.and_then(|ran| {
            run.steps += u64::from(ran);
            model.check_invariants()
        });
        if let Err(failure) = outcome {
            run.log.push(format!("  FAILED: {failure}"));
            run.failure = Some(failure);
            break;
        }
    }
    run
}

/// The owner a step names: the `n`-th active one, modulo their number. A step naming an owner
/// when none is active does nothing.
fn pick(model: &Model, n: usize) -> Option<usize> {
    let active: Vec<usize> = (0..model.owners.len()).filter(|&o| model.owners[o].active).collect();
    (!active.is_empty()).then(|| active[n % active.len()])
}

/// The record `owner` completes with: with a body (`body`), kept with trailers by every other
/// owner, so that replays are checked to carry them too.
pub(super) fn record_for(owner: usize, fp: u8, now: u64, ttl_ms: u64, body: bool) -> Record {
    let mut record = record(fingerprint(fp), Duration::ZERO, None);
    record.expires_at = UNIX_EPOCH + Duration::from_millis(now + ttl_ms);
    let data = Bytes::from(format!("{{\"owner\":{owner}}}"));
    record.body = match (body, owner % 2) {
        (false, _) => StoredBody::TooLarge,
        (true, 0) => StoredBody::Kept(data),
        (true, _) => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-owner", http::HeaderValue::from(owner));
            StoredBody::kept(data, trailers)
        }
    };
    record
}

/// Runs one step against the store and the model; `false` if there was nothing to do.
async fn run_step<S: Store>(
    subject: &mut Subject<S>,
    clock: &ManualClock,
    model: &mut Model,
    run: &mut Run,
    step: &Step,
) -> Result<bool, String> {
    let store = &subject.store;
    let now = model.now;
    let at = now - model.start;
    let mut tally = |answer: &'static str| *run.answers.entry(answer).or_default() += 1;
    match *step {
        Step::Claim { key, fingerprint: fp, lease, fault } => {
            let lease = LEASES_MS[lease];
            let (record_key, print) = (model.keys[key].key, fingerprint(fp));
            let (real, seen) = faulty(fault, || store.claim(&record_key, &print, Duration::from_millis(lease))).await;
            if let Some(outage) = outage(fault) {
                tally(outage);
            }
            run.operations += 1;
            let owner = model.owners.len();
            run.interleaving.push((owner, "claim"));
            run.log.push(format!(
                "t+{at}: new owner {owner} claims key {key} fp {fp} lease {lease} ({fault:?}): {real:?}"
            ));
            let Some(real) = real else { return Ok(true) };
            unexpected_error(&real)?;
            tally(claim_answer(&real));
            if let Granted::Yes(token, deadline) = model.claim(key, fp, lease, &real)? {
                let holder = if seen.is_ok() { Holder::Owner(owner) } else { Holder::Orphan };
                model.keys[key].slot = Slot::Claimed { holder, fingerprint: fp, deadline };
                if holder == Holder::Owner(owner) {
                    model.owners.push(OwnerModel {
                        key,
                        fingerprint: fp,
                        token,
                        deadline,
                        active: true,
                        vanished: false,
                        known: true,
                        pending: None,
                    });
                }
            }
        }
        Step::Renew { owner, lease, fault } => {
            let Some(owner) = pick(model, owner) else { return Ok(false) };
            let lease = LEASES_MS[lease];
            let (key, token) = (model.keys[model.owners[owner].key].key, model.owners[owner].token);
            let (real, _) = faulty(fault, || store.renew(&key, token, Duration::from_millis(lease))).await;
            if let Some(outage) = outage(fault) {
                tally(outage);
            }
            run.operations += 1;
            run.interleaving.push((owner, "renew"));
            run.log.push(format!("t+{at}: owner {owner} renews for {lease} ({fault:?}): {real:?}"));
            let Some(real) = real else { return Ok(true) };
            unexpected_error(&real)?;
            tally(model.renew(owner, lease, &real)?);
        }
        Step::Complete { owner, ttl, body, fault } => {
            let Some(owner) = pick(model, owner) else { return Ok(false) };
            let o = &model.owners[owner];
            let record = o.pending.clone().unwrap_or_else(|| record_for(owner, o.fingerprint, now, TTLS_MS[ttl], body));
            let (key, token) = (model.keys[o.key].key, o.token);
            let (real, seen) = faulty(fault, || store.complete(&key, token, record.clone())).await;
            if let Some(outage) = outage(fault) {
                tally(outage);
            }
            run.operations += 1;
            run.interleaving.push((owner, "complete"));
            let expires = ms(record.expires_at).saturating_sub(now);
            run.log.push(format!("t+{at}: owner {owner} completes, ttl left {expires} ({fault:?}): {real:?}"));
            if let Some(real) = &real {
                unexpected_error(real)?;
                tally(model.complete(owner, &record, real)?);
            }
            match (&real, seen) {
                (Some(Ok(()) | Err(StoreError::LeaseLost)), Ok(())) => model.owners[owner].active = false,
                _ => model.owners[owner].pending = Some(record),
            }
        }
        Step::Release { owner, fault } => {
            let Some(owner) = pick(model, owner) else { return Ok(false) };
            let (key, token) = (model.keys[model.owners[owner].key].key, model.owners[owner].token);
            let (real, _) = faulty(fault, || store.release(&key, token)).await;
            if let Some(outage) = outage(fault) {
                tally(outage);
            }
            run.operations += 1;
            run.interleaving.push((owner, "release"));
            run.log.push(format!("t+{at}: owner {owner} releases ({fault:?}): {real:?}"));
            // Whatever the answer, a request that released its claim is over.
            model.owners[owner].active = false;
            let Some(real) = real else { return Ok(true) };
            unexpected_error(&real)?;
            tally(model.release(owner, &real)?);
        }
        Step::ReleaseRacing { owner, racing } => {
            let Some(owner) = pick(model, owner) else { return Ok(false) };
            run.operations += 2;
            run.interleaving.push((owner, "release racing"));
            let raced =
                release_racing(store, model, owner, racing).await.map_err(|failure| format!("t+{at}: {failure}"))?;
            raced.answers.iter().for_each(|answer| tally(answer));
            run.log.push(format!("t+{at}: {}", raced.log));
        }
        Step::Crash { owner } => {
            let Some(owner) = pick(model, owner) else { return Ok(false) };
            run.log.push(format!("t+{at}: owner {owner} crashes"));
            model.owners[owner].active = false;
            tally("owner crashed");
        }
        Step::Advance { ms } => {
            clock.advance(Duration::from_millis(ms));
            model.now += ms;
            run.log.push(format!("t+{at}: the clock advances {ms} ms"));
        }
        Step::ToDeadline { key, before } => {
            let deadline = match (model.keys.get(key).map(|k| &k.slot), model.quarantine) {
                (Some(Slot::Claimed { deadline, .. }), _) => *deadline,
                (Some(Slot::Completed { record, .. }), _) => ms(record.expires_at),
                (None, Quarantine::Until { hi, .. }) => hi,
                _ => return Ok(false),
            };
            let to = deadline - u64::from(before);
            if to <= now {
                return Ok(false);
            }
            clock.advance(Duration::from_millis(to - now));
            model.now = to;
            let what = if key < KEYS { format!("key {key}'s deadline") } else { "the quarantine's end".to_owned() };
            let before = if before { " - 1 ms" } else { "" };
            run.log.push(format!("t+{at}: the clock advances {} ms, to {what}{before}", to - now));
        }
        Step::Forget => {
            let forget = subject.forget.as_mut().expect("only a forgetting store is asked to forget");
            forget().await;
            run.log.push(format!("t+{at}: the store forgets everything"));
            model.forget();
            tally("store forgot");
        }
    }
    Ok(true)
}
