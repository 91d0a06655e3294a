//! Steps against a reference model: random sequences of attempts of a three-step handler (two
//! keys, two bodies), each finishing, failing a step, answering a status that is not stored
//! after a step, or crashing during or after a step; a crash is an instance dying (its runtime
//! dropped, nothing of it runs again), and the clock moves by hand past the lease or not. After
//! every attempt the answer, and which steps ran, must be the model's: an attempt that takes a
//! key over never runs a step an attempt of the same request completed, and never gets the
//! result of a step another request (another body) ran.
//!
//! `IDEM_MODEL_CASES` sets the number of cases, e.g.
//! `IDEM_MODEL_CASES=20000 cargo test --release --all-features --test steps_model`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::post_to;
use idem_runtime::steps::{StepError, Steps};
use idem_runtime::store::MemoryStore;
use idem_runtime::testkit::ManualClock;
use idem_runtime::{idempotent, Idempotency};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const STEPS: [&str; 3] = ["a", "b", "c"];
const LEASE_MS: u64 = 10_000;

/// What an attempt does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Finish,
    /// Step i returns `Err` (when it runs).
    FailAt(usize),
    /// 503 (not stored) after step i.
    AnswerAfter(usize),
    /// The instance dies while step i runs (when it runs).
    CrashDuring(usize),
    /// The instance dies after step i, before the next.
    CrashAfter(usize),
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Attempt {
        key: u8,
        body: u8,
        stop: Stop,
    },
    /// The clock moves by 1 s, or past the lease.
    Advance {
        past_the_lease: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let at = 0..STEPS.len();
    let stop = prop_oneof![
        2 => Just(Stop::Finish),
        1 => at.clone().prop_map(Stop::FailAt),
        1 => at.clone().prop_map(Stop::AnswerAfter),
        1 => at.clone().prop_map(Stop::CrashDuring),
        1 => at.prop_map(Stop::CrashAfter),
    ];
    prop_oneof![
        4 => (0..2u8, 0..2u8, stop).prop_map(|(key, body, stop)| Op::Attempt { key, body, stop }),
        1 => any::<bool>().prop_map(|past_the_lease| Op::Advance { past_the_lease }),
    ]
}

/// What the handler sees of the attempt in progress, and what its steps did.
#[derive(Default)]
struct World {
    stop: Mutex<Option<Stop>>,
    /// Steps whose closure started in the current attempt, and the value of those that ended.
    started: Mutex<Vec<(usize, Option<u64>)>>,
    /// Told when the attempt reached the instant its instance dies.
    dying: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    values: AtomicU64,
}

impl World {
    async fn die(&self) {
        if let Some(dying) = self.dying.lock().unwrap().take() {
            let _ = dying.send(());
        }
        std::future::pending::<()>().await;
    }
}

#[idempotent(required, lease = "10s")]
async fn pay(State(world): State<Arc<World>>, steps: Steps, Json(body): Json<u8>) -> (StatusCode, String) {
    let stop = world.stop.lock().unwrap().expect("a planned attempt");
    let mut values = Vec::new();
    for (i, name) in STEPS.iter().enumerate() {
        let step = || async {
            world.started.lock().unwrap().push((i, None));
            match stop {
                Stop::CrashDuring(at) if at == i => world.die().await,
                Stop::FailAt(at) if at == i => return Err(std::io::Error::other("the step failed")),
                _ => {}
            }
            // A value of this body's, unique to this run of the step.
            let value = world.values.fetch_add(1, Ordering::SeqCst) * 2 + u64::from(body);
            world.started.lock().unwrap().last_mut().unwrap().1 = Some(value);
            Ok(value)
        };
        match steps.run(name, step).await {
            Ok(value) => values.push(value),
            Err(StepError::Busy) => return (StatusCode::SERVICE_UNAVAILABLE, "busy".into()),
            Err(error) => return (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
        }
        match stop {
            Stop::AnswerAfter(at) if at == i => return (StatusCode::SERVICE_UNAVAILABLE, "after".into()),
            Stop::CrashAfter(at) if at == i => world.die().await,
            _ => {}
        }
    }
    (StatusCode::CREATED, format!("{values:?}"))
}

/// The reference: what the store holds, as the model sees it (times in ms on the test clock).
#[derive(Default)]
struct Model {
    now: u64,
    /// Per key: the body that completed it, and the stored answer.
    records: HashMap<u8, (u8, String)>,
    /// Per key: the body of a crashed attempt whose claim is held, and until when.
    claims: HashMap<u8, (u8, u64)>,
    /// Per (key, body, step): the kept value.
    kept: HashMap<(u8, u8, usize), u64>,
    /// Per (key, body, step): until when a crashed run of the step holds it.
    running: HashMap<(u8, u8, usize), u64>,
    tally: Tally,
}

/// What the cases exercised.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    attempts: u64,
    crashes: u64,
    /// Attempts that ran the handler on a key a crashed attempt had claimed.
    takeovers: u64,
    /// Steps returned from what an earlier attempt kept, without running.
    kept_returned: u64,
    /// Handlers run for a body on a key where another body had kept steps.
    other_body_runs: u64,
}

/// What an attempt got, and which of its steps started (with the value of those that ended).
#[derive(Debug)]
struct Seen {
    answer: Option<(u16, String)>,
    started: Vec<(usize, Option<u64>)>,
}

impl Model {
    /// Checks `seen` against the model, and updates it.
    fn attempt(&mut self, key: u8, body: u8, stop: Stop, seen: &Seen) -> Result<(), String> {
        let expect = |answer: Option<(u16, &str)>, started: &[(usize, Option<u64>)]| {
            let answer = answer.map(|(status, text)| (status, text.to_owned()));
            if seen.answer == answer && seen.started == started {
                Ok(())
            } else {
                Err(format!("expected {answer:?} with steps {started:?}, got {seen:?}"))
            }
        };
        if let Some((first, answer)) = self.records.get(&key) {
            return if *first == body { expect(Some((201, answer)), &[]) } else { expect(Some((422, "")), &[]) };
        }
        if let Some(&(holder, until)) = self.claims.get(&key) {
            if self.now < until {
                return expect(Some((if holder == body { 409 } else { 422 }, "")), &[]);
            }
        }
        self.tally.takeovers += u64::from(self.claims.remove(&key).is_some());
        self.tally.other_body_runs += u64::from(self.kept.keys().any(|&(k, b, _)| k == key && b != body));
        let (mut values, mut started) = (Vec::new(), Vec::new());
        for i in 0..STEPS.len() {
            let at = (key, body, i);
            if let Some(&value) = self.kept.get(&at) {
                self.tally.kept_returned += 1;
                values.push(value);
            } else if self.running.get(&at).is_some_and(|&until| self.now < until) {
                return expect(Some((503, "busy")), &started);
            } else {
                self.running.remove(&at);
                match stop {
                    Stop::CrashDuring(s) if s == i => {
                        started.push((i, None));
                        self.running.insert(at, self.now + LEASE_MS);
                        self.claims.insert(key, (body, self.now + LEASE_MS));
                        self.tally.crashes += 1;
                        return expect(None, &started);
                    }
                    Stop::FailAt(s) if s == i => {
                        started.push((i, None));
                        return expect(Some((503, "the step failed: the step failed")), &started);
                    }
                    _ => {}
                }
                // A new value: whatever the attempt saw, if it is this body's and the step ran.
                let value = match seen.started.get(started.len()) {
                    Some(&(step, Some(value))) if step == i && value % 2 == u64::from(body) => value,
                    _ => return Err(format!("step {i} should have been the next to run, for body {body}: {seen:?}")),
                };
                started.push((i, Some(value)));
                self.kept.insert(at, value);
                values.push(value);
            }
            match stop {
                Stop::AnswerAfter(s) if s == i => return expect(Some((503, "after")), &started),
                Stop::CrashAfter(s) if s == i => {
                    self.claims.insert(key, (body, self.now + LEASE_MS));
                    self.tally.crashes += 1;
                    return expect(None, &started);
                }
                _ => {}
            }
        }
        let answer = format!("{values:?}");
        expect(Some((201, &answer)), &started)?;
        self.records.insert(key, (body, answer));
        Ok(())
    }
}

/// One attempt on an instance of its own (a runtime and a layer over the shared store); the
/// instance dies (its runtime is dropped) if the attempt reaches its crash.
fn attempt(store: &MemoryStore, world: &Arc<World>, key: u8, body: u8, stop: Stop) -> Seen {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let app = Router::new().route("/pay", post(pay)).layer(Idempotency::new(store.clone())).with_state(world.clone());
    *world.stop.lock().unwrap() = Some(stop);
    world.started.lock().unwrap().clear();
    let (dying, died) = tokio::sync::oneshot::channel();
    *world.dying.lock().unwrap() = Some(dying);
    let request = post_to("/pay").key(&format!("key-{key}")).json(&body.to_string());
    let answer = runtime.block_on(async {
        tokio::select! {
            reply = request.send(&app) => {
                let text = String::from_utf8_lossy(&reply.body).into_owned();
                // Problems are compared by status only.
                let text = if reply.status.is_client_error() { String::new() } else { text };
                Some((reply.status.as_u16(), text))
            }
            _ = died => None,
        }
    });
    drop(runtime);
    Seen { answer, started: std::mem::take(&mut *world.started.lock().unwrap()) }
}

fn run_case(ops: &[Op], tally: &Mutex<Tally>) -> Result<(), String> {
    let clock = ManualClock::new();
    let store = MemoryStore::builder().clock(clock.clone()).build();
    let world = Arc::new(World::default());
    let mut model = Model::default();
    for (n, op) in ops.iter().enumerate() {
        match *op {
            Op::Advance { past_the_lease } => {
                let by = if past_the_lease { LEASE_MS } else { 1_000 };
                clock.advance(Duration::from_millis(by));
                model.now += by;
            }
            Op::Attempt { key, body, stop } => {
                model.tally.attempts += 1;
                let seen = attempt(&store, &world, key, body, stop);
                model.attempt(key, body, stop, &seen).map_err(|e| format!("op {n} {op:?}: {e}"))?;
            }
        }
    }
    let mut total = tally.lock().unwrap();
    let t = model.tally;
    total.attempts += t.attempts;
    total.crashes += t.crashes;
    total.takeovers += t.takeovers;
    total.kept_returned += t.kept_returned;
    total.other_body_runs += t.other_body_runs;
    Ok(())
}

#[test]
fn steps_follow_the_model_across_crashes_takeovers_and_reused_keys() {
    let cases = std::env::var("IDEM_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let tally = Mutex::new(Tally::default());
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        run_case(&ops, &tally).map_err(proptest::test_runner::TestCaseError::fail)
    });
    if let Err(error) = result {
        panic!("{error}");
    }
    println!("{cases} cases: {:?}", tally.lock().unwrap());
}
