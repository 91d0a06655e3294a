//! The model-based check of the claim/lease/complete protocol: random interleavings of several
//! owners against a store and a reference model, with the invariants checked after every step.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::BuildHasher as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::strategy::{BoxedStrategy, Just, Strategy, Union};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

mod model;
mod race;
mod run;

use self::race::Racing;
use self::run::{run_case, Tally};
use crate::store::{Clock, Store};

/// A clock moved by hand, in whole milliseconds. Clones share the time.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::store::{Clock as _, MemoryStore};
/// use idem_runtime::testkit::ManualClock;
///
/// let clock = ManualClock::new();
/// let store = MemoryStore::builder().clock(clock.clone()).build();
/// let before = clock.now();
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now().duration_since(before).unwrap(), Duration::from_secs(30));
/// # drop(store);
/// ```
#[derive(Clone, Debug)]
pub struct ManualClock {
    unix_ms: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading the system's time now, to the millisecond, and standing still.
    pub fn new() -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
        Self { unix_ms: Arc::new(AtomicU64::new(now.as_millis() as u64)) }
    }

    /// Moves the clock forward by `by`, in whole milliseconds.
    pub fn advance(&self, by: Duration) {
        self.unix_ms.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    fn ms(&self) -> u64 {
        self.unix_ms.load(Ordering::SeqCst)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.ms())
    }
}

type ForgetHook = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A store under [`check_protocol`], built on the check's [`ManualClock`], and, for a store
/// that can lose what it holds, how to make it forget.
pub struct Subject<S> {
    store: S,
    forget: Option<ForgetHook>,
}

impl<S: Store> Subject<S> {
    /// A store that never forgets what it holds while the application runs.
    pub fn new(store: S) -> Self {
        Self { store, forget: None }
    }

    /// A store that can forget everything it holds while the application runs, as a Redis
    /// restarted without persistence does; `forget` makes it do so (for Redis: delete every
    /// key under the store's prefix, its marker included). The check then also holds the
    /// store to the contract of a forgetting store:
    ///
    /// - the first operation that reaches the store after it forgot starts a quarantine as
    ///   long as the longest of [`MODEL_MAX_LEASE`] and every lease the store was asked for
    ///   (in `claim` and `renew`) until then; until it ends, a claim that would acquire answers
    ///   [`StoreError::Recovering`](crate::store::StoreError::Recovering) with exactly the time left, while replays, conflicts and
    ///   mismatches answer as usual;
    /// - an owner whose claim it forgot, renewing or completing while its lease (as last
    ///   renewed) still holds and nothing else holds the key, re-asserts its claim: the renewal
    ///   or completion succeeds as if the claim had been there; never once the owner released
    ///   it (a renewal still on its way when its owner released does not put the claim back);
    /// - a local tier in front may keep replaying a forgotten record it cached, until the
    ///   record expires.
    pub fn forgetting<F, Fut>(mut self, mut forget: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.forget = Some(Box::new(move || Box::pin(forget())));
        self
    }

    /// The same subject with its store wrapped (in a `LocalTier`, say): forgetting still
    /// makes the inner store forget.
    pub fn map_store<T: Store>(self, wrap: impl FnOnce(S) -> T) -> Subject<T> {
        Subject { store: wrap(self.store), forget: self.forget }
    }
}

impl<S> std::fmt::Debug for Subject<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject").field("forgetting", &self.forget.is_some()).finish_non_exhaustive()
    }
}

/// The longest lease a forgetting store under [`check_protocol`] is configured with (for
/// `RedisStore`: `max_lease`). The check asks for leases of 1, 2, 3 and 5 seconds, so the
/// store must raise its longest lease by itself.
pub const MODEL_MAX_LEASE: Duration = Duration::from_secs(3);

const KEYS: usize = 3;
const LEASES_MS: [u64; 4] = [1_000, 2_000, 3_000, 5_000];
/// Record ttls: 0 is a record already expired when it is stored.
const TTLS_MS: [u64; 4] = [0, 1_000, 4_000, 30_000];
/// Steps per case unless `IDEM_MODEL_STEPS` says otherwise.
const DEFAULT_STEPS: usize = 64;

/// What [`check_protocol`] ran.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ProtocolReport {
    /// The seed of the random cases: `IDEM_MODEL_SEED` set to it runs the same cases again.
    pub seed: u64,
    /// Cases run, each against a fresh store.
    pub cases: u64,
    /// Steps run, store operations and the rest (crashes, the clock, forgetting).
    pub steps: u64,
    /// Store operations run.
    pub operations: u64,
    /// Distinct interleavings among the cases: sequences of (owner, operation).
    pub interleavings: u64,
    /// How often each operation got each answer, e.g. `claim: acquired`.
    pub answers: BTreeMap<&'static str, u64>,
}

impl std::fmt::Display for ProtocolReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cases, {} steps, {} store operations, {} distinct interleavings (IDEM_MODEL_SEED={})",
            self.cases, self.steps, self.operations, self.interleavings, self.seed
        )?;
        for (answer, n) in &self.answers {
            write!(f, "\n  {answer}: {n}")?;
        }
        Ok(())
    }
}

/// Checks a store against a reference model of the protocol, over `cases` random
/// interleavings (`IDEM_MODEL_CASES` overrides it, `IDEM_MODEL_STEPS` the steps per case,
/// 64 by default, `IDEM_MODEL_SEED` the random seed), and returns what ran. Panics with the
/// smallest failing interleaving found and the seed that reproduces it.
///
/// Each case builds a fresh store with `make_store` on a [`ManualClock`] and drives several
/// owners over three keys and two fingerprints: claims with leases of 1 to 5 s, renewals,
/// completions with records whose ttl varies (including already expired), releases, crashes
/// (the owner never acts again), releases that overtake the owner's own renewal or completion
/// sent just before (the store may run them in either order, but never put the claim back
/// after the release), the clock advancing (past leases and ttls, or not), store
/// outages (an operation fails without effect, or takes effect and its reply is lost), and,
/// for a [forgetting](Subject::forgetting) store, the store forgetting everything. After every
/// step it checks that:
///
/// - every operation got the one answer the model allows (a replay returns exactly the record
///   stored, an in-flight conflict exactly the lease left);
/// - at most one owner per key is live (from `Acquired` until its lease would lapse without
///   renewal, it completes, releases or crashes; an owner whose claim a store forgot stays
///   live until its lease lapses);
/// - a completed record is never replaced by a stale owner, and no owner is granted the key
///   again within the record's ttl (unless the store forgot it).
///
/// It runs its own Tokio runtime: call it from a plain `#[test]`, not from inside a runtime.
///
/// ```no_run
/// use idem_runtime::store::{LocalTier, MemoryStore};
/// use idem_runtime::testkit::{check_protocol, Subject};
///
/// let report = check_protocol(
///     |clock| async move { Subject::new(LocalTier::new(MemoryStore::builder().clock(clock).build())) },
///     64,
/// );
/// println!("{report}");
/// ```
pub fn check_protocol<S, F, Fut>(make_store: F, cases: u32) -> ProtocolReport
where
    S: Store,
    F: FnMut(ManualClock) -> Fut,
    Fut: Future<Output = Subject<S>>,
{
    let cases = env_number("IDEM_MODEL_CASES").map_or(cases, |n| n as u32);
    let steps = env_number("IDEM_MODEL_STEPS").map_or(DEFAULT_STEPS, |n| n as usize).max(1);
    let seed = env_number("IDEM_MODEL_SEED")
        .unwrap_or_else(|| std::collections::hash_map::RandomState::new().hash_one(std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
    let make_store = std::cell::RefCell::new(make_store);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let tally = std::cell::RefCell::new(Tally::default());
    let strategy = proptest::collection::vec(step(), 1..=steps);
    let result = runner.run(&strategy, |steps| {
        let clock = ManualClock::new();
        let subject = runtime.block_on((make_store.borrow_mut())(clock.clone()));
        let run = runtime.block_on(run_case(subject, clock, &steps));
        tally.borrow_mut().absorb(&run);
        match run.failure {
            None => Ok(()),
            Some(failure) => Err(TestCaseError::fail(format!("{failure}\nwhat happened:\n{}", run.log.join("\n")))),
        }
    });
    match result {
        Ok(()) => tally.into_inner().report(seed),
        Err(TestError::Fail(reason, steps)) => panic!(
            "the store broke the protocol (IDEM_MODEL_SEED={seed} runs these cases again): {reason}\n\
             smallest failing case: {steps:#?}"
        ),
        Err(TestError::Abort(reason)) => panic!("the protocol check aborted: {reason}"),
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Fault {
    None,
    /// The operation fails without effect.
    Before,
    /// The operation takes effect, but its reply is lost: the caller sees an error.
    After,
}

#[derive(Clone, Debug)]
enum Step {
    Claim {
        key: usize,
        fingerprint: u8,
        lease: usize,
        fault: Fault,
    },
    Renew {
        owner: usize,
        lease: usize,
        fault: Fault,
    },
    Complete {
        owner: usize,
        ttl: usize,
        body: bool,
        fault: Fault,
    },
    Release {
        owner: usize,
        fault: Fault,
    },
    /// The owner releases while one of its own renewals or completions, sent just before, is
    /// still on its way to the store.
    ReleaseRacing {
        owner: usize,
        racing: Racing,
    },
    Crash {
        owner: usize,
    },
    Advance {
        ms: u64,
    },
    /// The clock advances to a key's lease deadline or record expiry, or with `key` past the
    /// keys to the end of a quarantine (or a millisecond before).
    ToDeadline {
        key: usize,
        before: bool,
    },
    Forget,
}

fn fault() -> BoxedStrategy<Fault> {
    Union::new_weighted(vec![
        (8, Just(Fault::None).boxed()),
        (1, Just(Fault::Before).boxed()),
        (1, Just(Fault::After).boxed()),
    ])
    .boxed()
}

/// One step. `Forget` is drawn for every store; a store that cannot forget skips it.
fn step() -> BoxedStrategy<Step> {
    let lease = 0..LEASES_MS.len();
    // Owners are picked among the active ones, by index modulo their number.
    let owner = 0..8usize;
    let steps = vec![
        (
            10,
            (0..KEYS, 1..=2u8, lease.clone(), fault())
                .prop_map(|(key, fingerprint, lease, fault)| Step::Claim { key, fingerprint, lease, fault })
                .boxed(),
        ),
        (
            6,
            (owner.clone(), lease, fault())
                .prop_map(|(owner, lease, fault)| Step::Renew { owner, lease, fault })
                .boxed(),
        ),
        (
            6,
            (owner.clone(), 0..TTLS_MS.len(), proptest::bool::weighted(0.8), fault())
                .prop_map(|(owner, ttl, body, fault)| Step::Complete { owner, ttl, body, fault })
                .boxed(),
        ),
        (2, (owner.clone(), fault()).prop_map(|(owner, fault)| Step::Release { owner, fault }).boxed()),
        (2, (owner.clone(), race::racing()).prop_map(|(owner, racing)| Step::ReleaseRacing { owner, racing }).boxed()),
        (2, owner.prop_map(|owner| Step::Crash { owner }).boxed()),
        // Within a lease, or past leases and short ttls.
        (4, (0..=400u64).prop_map(|ms| Step::Advance { ms }).boxed()),
        (4, (400..=6_000u64).prop_map(|ms| Step::Advance { ms }).boxed()),
        (2, (0..=KEYS, proptest::bool::ANY).prop_map(|(key, before)| Step::ToDeadline { key, before }).boxed()),
        (1, Just(Step::Forget).boxed()),
    ];
    Union::new_weighted(steps).boxed()
}
