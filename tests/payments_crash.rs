//! One charge per payment across crashes, with real processes and a real PostgreSQL server: a
//! provider instance and two paying instances of the demo share one database; each payment is
//! sent with a handler delay after its charge, the paying instance is killed with SIGKILL at a
//! random instant (before, during or after the charge step), restarted, and the payment retried
//! on both instances until 201. Then every payment exists once, the provider holds exactly one
//! charge for it, and its request counts show where the step saved a call.
//!
//! `IDEM_CRASH_TRIALS` sets the number of payments (each with a kill), e.g. for a long run:
//! `IDEM_CRASH_TRIALS=60 cargo test --all-features --test payments_crash -- --nocapture`.

mod common;
mod pg_common;

use std::collections::HashMap;
use std::time::Duration;

use common::crash::{post_until_201, trials, try_post, Database, Random};
use common::demo::{start, Demo};
use sqlx::Connection as _;

const DELAY_MS: u64 = 300;

/// Where the first attempt of a payment was when its instance died, as the provider saw it.
#[derive(Debug, Default)]
struct Report {
    payments: usize,
    /// The first attempt's 201 reached the client before the kill.
    answered_before_kill: usize,
    /// Killed before the provider received the charge: the retry charged.
    before_the_charge: usize,
    /// Killed after the charge was kept as a step: the retry asked the provider nothing.
    after_the_step_was_kept: usize,
    /// Killed after the provider charged, before the step was kept: the retry asked again and
    /// the provider answered with the same charge (the derived key).
    between_charge_and_keeping: usize,
    /// Payments not exactly once, or without exactly one charge of their amount.
    duplicated_payments: usize,
    lost_payments: usize,
    extra_charges: usize,
    /// A payment whose charge is not the provider's charge for it.
    wrong_charges: usize,
    /// A charge the provider received more than two requests for (one kill per payment).
    over_asked: usize,
    wrong_replays: usize,
}

/// Every row `sql` reads from the database at `url`.
fn rows<T>(url: &str, sql: &'static str, runtime: &tokio::runtime::Runtime) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    runtime.block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
    })
}

/// The provider's charges by amount: (id, requests), one entry per charge.
fn charges(url: &str, runtime: &tokio::runtime::Runtime) -> HashMap<i64, Vec<(String, i32)>> {
    let mut by_amount: HashMap<i64, Vec<(String, i32)>> = HashMap::new();
    for (id, amount, requests) in
        rows::<(i64, i64, i32)>(url, "SELECT id, amount, requests FROM idem_demo_charges", runtime)
    {
        by_amount.entry(amount).or_default().push((format!("ch_{id}"), requests));
    }
    by_amount
}

/// The payments by amount: the charge each records.
fn payments(url: &str, runtime: &tokio::runtime::Runtime) -> HashMap<i64, Vec<String>> {
    let sql = "SELECT amount, charge FROM idem_demo_payments WHERE owner = 'crash'";
    let mut by_amount: HashMap<i64, Vec<String>> = HashMap::new();
    for (amount, charge) in rows::<(i64, String)>(url, sql, runtime) {
        by_amount.entry(amount).or_default().push(charge);
    }
    by_amount
}

#[test]
fn every_payment_is_charged_once_whenever_the_paying_instance_dies() {
    let test = "every_payment_is_charged_once_whenever_the_paying_instance_dies";
    let Some(admin_url) = pg_common::database_url(test) else { return };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let database = Database::create(&admin_url, &runtime);
    let trials = trials();
    let mut random = Random::seeded(test, trials);

    let provider = start(&["--store", &database.url]);
    let provider_url = format!("http://{}", provider.addr);
    let delay = DELAY_MS.to_string();
    let args = ["--store", &database.url, "--provider", &provider_url, "--handler-delay-ms", &delay];
    let mut payers: [Demo; 2] = [start(&args), start(&args)];
    let mut report = Report { payments: trials, ..Report::default() };
    let mut first_201: HashMap<i64, String> = HashMap::new();
    let run = idem_runtime::testkit::fresh_key().to_hex()[..8].to_owned();
    for trial in 0..trials {
        let (key, amount) = (format!("{run}-{trial}"), 1000 + trial as i64);
        let body = format!(r#"{{"amount":{amount}}}"#);
        let victim = random.below(2) as usize;
        let (addr, key_sent, body_sent) = (payers[victim].addr, key.clone(), body.clone());
        let first = std::thread::spawn(move || try_post(addr, "/payments", &key_sent, &body_sent));
        // Half the kills within the first 40 ms (around the charge), half anywhere up to after
        // the response.
        let within = if random.below(2) == 0 { 40 } else { DELAY_MS + 80 };
        std::thread::sleep(Duration::from_millis(random.below(within)));
        payers[victim].child.kill().unwrap();
        payers[victim].child.wait().unwrap();
        if let Some((201, _, body)) = first.join().unwrap() {
            report.answered_before_kill += 1;
            first_201.insert(amount, body);
        }
        let charged_before_retry = charges(&database.url, &runtime).contains_key(&amount);
        payers[victim] = start(&args);
        if first_201.contains_key(&amount) {
            continue;
        }
        let body_201 = post_until_201(&[payers[0].addr, payers[1].addr], "/payments", &key, &body);
        first_201.insert(amount, body_201);
        let requests = charges(&database.url, &runtime).get(&amount).map(|c| c[0].1).unwrap_or(0);
        match (charged_before_retry, requests) {
            (false, _) => report.before_the_charge += 1,
            (true, 1) => report.after_the_step_was_kept += 1,
            (true, _) => report.between_charge_and_keeping += 1,
        }
    }
    // Every payment once more, on both instances: a replay of the first 201.
    for trial in 0..trials {
        let (key, amount) = (format!("{run}-{trial}"), 1000 + trial as i64);
        let body = format!(r#"{{"amount":{amount}}}"#);
        for payer in &payers {
            let (status, replayed, replay) = try_post(payer.addr, "/payments", &key, &body).expect("the payer answers");
            if status != 201 || !replayed || replay != first_201[&amount] {
                println!("{key}: replay {status} replayed={replayed} {replay} differs from {}", first_201[&amount]);
                report.wrong_replays += 1;
            }
        }
    }
    let (charges, payments) = (charges(&database.url, &runtime), payments(&database.url, &runtime));
    for amount in first_201.keys() {
        let kept = payments.get(amount).map(Vec::as_slice).unwrap_or_default();
        let made = charges.get(amount).map(Vec::as_slice).unwrap_or_default();
        match kept.len() {
            0 => report.lost_payments += 1,
            1 => {}
            _ => report.duplicated_payments += 1,
        }
        report.extra_charges += made.len().saturating_sub(1);
        if made.len() != 1 || kept.iter().any(|charge| *charge != made[0].0) {
            report.wrong_charges += 1;
        }
        report.over_asked += made.iter().filter(|(_, requests)| *requests > 2).count();
    }
    let requests: i32 = charges.values().flatten().map(|(_, requests)| requests).sum();
    println!(
        "{test}: {} payments, {} kills ({} answered before; killed before the charge {}, after the step was kept {}, \
         between the charge and its keeping {}); the provider received {requests} requests for {} charges; \
         {} payments duplicated, {} lost, {} extra charges, {} wrong charges, {} charges asked for more than twice, \
         {} wrong replays",
        report.payments,
        report.payments,
        report.answered_before_kill,
        report.before_the_charge,
        report.after_the_step_was_kept,
        report.between_charge_and_keeping,
        charges.len(),
        report.duplicated_payments,
        report.lost_payments,
        report.extra_charges,
        report.wrong_charges,
        report.over_asked,
        report.wrong_replays,
    );
    drop((payers, provider));
    database.drop_now(&runtime);
    let failures = (
        report.duplicated_payments,
        report.lost_payments,
        report.extra_charges,
        report.wrong_charges,
        report.over_asked,
        report.wrong_replays,
    );
    assert_eq!(failures, (0, 0, 0, 0, 0, 0), "{report:?}");
}
