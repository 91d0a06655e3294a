//! The transactional mode's error paths against a real PostgreSQL server
//! (`IDEM_TEST_DATABASE_URL`): a handler taking `Tx` meets a failed statement (unique and check
//! violations, a serialization failure, a deadlock, a statement timeout, its connection killed),
//! catches it and answers. Each case checks that the answer reaches the client as the handler
//! chose, that a kept answer is replayed and a released one runs again, that none of the failed
//! transaction's writes commit, and that idem never turns the error into a 503 every retry repeats.

mod common;
mod pg_common;
mod pg_tx_errors_app;

use axum::http::StatusCode;
use common::Reply;
use pg_tx_errors_app::{failing, Attempt, Failure, Fixture};

/// The handler's own answer, naming the SQLSTATE it caught.
fn assert_answered(reply: &Reply, status: u16, sqlstate: &str) {
    assert_eq!(reply.status.as_u16(), status, "{:?}", reply.body);
    assert_eq!(reply.json()["caught"], sqlstate, "{:?}", reply.body);
    assert!(!reply.replayed());
}

/// A kept answer: it reached the client, none of the run's writes committed, and a retry
/// replays it without running the handler.
async fn assert_kept(f: &Fixture, path: &str, key: &str, attempt: &Attempt, sqlstate: &str) {
    let first = f.send(path, key, attempt).await;
    assert_answered(&first, attempt.answer, sqlstate);
    assert_eq!(f.orders(&attempt.item).await, 0, "the failed transaction's order committed");
    let runs = f.runs();
    let retry = f.send(path, key, attempt).await;
    assert_eq!(retry.status, first.status, "{:?}", retry.body);
    assert!(retry.replayed(), "the answer was not stored: {:?}", retry.body);
    assert_eq!(retry.body, first.body);
    assert_eq!((f.runs(), f.orders(&attempt.item).await), (runs, 0));
}

/// A released answer: it reached the client, none of the run's writes committed, and a retry
/// runs the handler again (which fails and answers again).
async fn assert_released(f: &Fixture, path: &str, key: &str, attempt: &Attempt, sqlstate: &str) {
    let first = f.send(path, key, attempt).await;
    assert_answered(&first, attempt.answer, sqlstate);
    let runs = f.runs();
    let retry = f.send(path, key, attempt).await;
    assert_answered(&retry, attempt.answer, sqlstate);
    assert_eq!((f.runs(), f.orders(&attempt.item).await), (runs + 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_check_violation_answered_422_is_stored_and_replayed() {
    let Some(f) = Fixture::new("tx_err_check_422", false).await else { return };
    assert_kept(&f, "/attempts", "c1", &failing("mug", Failure::CheckViolation, 422), "23514").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_check_violation_answered_400_is_stored_and_replayed() {
    let Some(f) = Fixture::new("tx_err_check_400", false).await else { return };
    assert_kept(&f, "/attempts", "c2", &failing("jar", Failure::CheckViolation, 400), "23514").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unique_violation_answered_409_is_released_by_default_and_stored_when_kept() {
    let Some(f) = Fixture::new("tx_err_unique", false).await else { return };
    let attempt = failing("tray", Failure::UniqueViolation, 409);
    assert_released(&f, "/attempts", "u1", &attempt, "23505").await;
    assert_kept(&f, "/attempts-keeping-409", "u2", &attempt, "23505").await;
    let kept = failing("bowl", Failure::UniqueViolation, 422);
    assert_kept(&f, "/attempts", "u3", &kept, "23505").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_statement_timeout_answered_422_is_stored_and_answered_504_runs_again() {
    let Some(f) = Fixture::new("tx_err_timeout", false).await else { return };
    assert_kept(&f, "/attempts", "t1", &failing("dial", Failure::StatementTimeout, 422), "57014").await;
    assert_released(&f, "/attempts", "t2", &failing("knob", Failure::StatementTimeout, 504), "57014").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changing_the_isolation_inside_the_handler_is_a_failed_statement_it_can_answer() {
    let Some(f) = Fixture::new("tx_err_isolation", false).await else { return };
    assert_kept(&f, "/attempts", "i1", &failing("sock", Failure::IsolationChange, 422), "25001").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_key_the_handlers_answer_reaches_the_client_and_nothing_commits() {
    let Some(f) = Fixture::new("tx_err_keyless", false).await else { return };
    let attempt = failing("pad", Failure::CheckViolation, 422);
    let reply = f.send_without_key("/attempts-optional", &attempt).await;
    assert_answered(&reply, 422, "23514");
    let again = f.send_without_key("/attempts-optional", &attempt).await;
    assert_answered(&again, 422, "23514");
    assert_eq!((f.orders("pad").await, f.runs()), (0, 2));
}

/// Two runs on different keys decrement the same stock row under SERIALIZABLE: the second,
/// blocked on the first's row lock, fails when the first commits. Returns the replies and the
/// second's backend.
async fn serialization_failure(f: &mut Fixture, answer: u16) -> (Reply, Reply, i32) {
    let first = Attempt { hold: true, ..failing("first", Failure::Serialization, 500) };
    let first = f.spawn("/attempts", "s-first", first);
    f.reached.recv().await.unwrap();
    let second = f.spawn("/attempts", "s-second", failing("second", Failure::Serialization, answer));
    let pid = f.reached.recv().await.unwrap();
    f.until_blocked(pid).await;
    f.app.gate.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    (first, second.await.unwrap(), pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_serialization_failure_answered_409_runs_again_and_succeeds() {
    let Some(mut f) = Fixture::new("tx_err_serialization", true).await else { return };
    let (_, second, _) = serialization_failure(&mut f, 409).await;
    assert_answered(&second, 409, "40001");
    assert_eq!((f.orders("first").await, f.orders("second").await, f.stock(1).await), (1, 0, 99));
    let attempt = failing("second", Failure::Serialization, 409);
    let retry = f.send("/attempts", "s-second", &attempt).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
    assert!(!retry.replayed());
    assert_eq!((f.orders("second").await, f.stock(1).await, f.runs()), (1, 98, 3));
}

/// Under SERIALIZABLE the failed transaction is doomed: after the rollback to idem's savepoint
/// the record's write fails too (40001), so the kept answer cannot be stored; idem answers 503
/// with nothing kept, and the retry runs the handler, which succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_serialization_failure_answered_422_cannot_be_stored_so_idem_answers_503_and_the_retry_succeeds() {
    // A pool that flushes a dropped transaction's ROLLBACK late: the retry below would meet the
    // key's lock (409) had idem answered before rolling back.
    let Some(mut f) = Fixture::with("tx_err_serialization_kept", true, true).await else { return };
    let (_, second, pid) = serialization_failure(&mut f, 422).await;
    second.assert_problem(503, "urn:idem:problem:store-unavailable");
    // Rolled back before the answer, so that the retry finds the key free (not 409).
    assert!(!f.in_transaction(pid).await, "the failed transaction was still open after its 503");
    assert_eq!((f.orders("second").await, f.stock(1).await), (0, 99));
    let attempt = failing("second", Failure::Serialization, 422);
    let retry = f.send("/attempts", "s-second", &attempt).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
    assert!(!retry.replayed());
    assert_eq!((f.orders("second").await, f.stock(1).await, f.runs()), (1, 98, 3));
}

/// Two runs on different keys lock the two stock rows in opposite orders.
async fn deadlock(f: &mut Fixture, answer: u16) -> (Reply, Reply) {
    let one = Attempt { hold: true, first: 1, ..failing("one", Failure::Deadlock, answer) };
    let one = f.spawn("/attempts", "d-one", one);
    let one_pid = f.reached.recv().await.unwrap();
    let two = Attempt { hold: true, first: 2, ..failing("two", Failure::Deadlock, answer) };
    let two = f.spawn("/attempts", "d-two", two);
    let two_pid = f.reached.recv().await.unwrap();
    // Each holds its first row. One goes on and waits for the other's row; then the other asks
    // for the first one's row, closing the cycle.
    f.app.gate.add_permits(1);
    f.until_one_blocked(&[one_pid, two_pid]).await;
    f.app.gate.add_permits(1);
    (one.await.unwrap(), two.await.unwrap())
}

/// Which of two deadlocked runs lost (answered its status) and which committed (201).
fn loser_and_winner<'a>(one: &'a Reply, two: &'a Reply) -> (&'a Reply, &'a Reply, &'static str) {
    if one.status == StatusCode::CREATED {
        (two, one, "d-two")
    } else {
        (one, two, "d-one")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadlock_answered_422_is_stored_and_the_other_run_commits() {
    let Some(mut f) = Fixture::new("tx_err_deadlock_kept", false).await else { return };
    let (one, two) = deadlock(&mut f, 422).await;
    let (loser, winner, loser_key) = loser_and_winner(&one, &two);
    assert_eq!(winner.status, StatusCode::CREATED, "{:?}", winner.body);
    assert_answered(loser, 422, "40P01");
    let lost = loser.json()["item"].as_str().unwrap().to_owned();
    assert_eq!(f.orders(&lost).await, 0);
    assert_eq!((f.stock(1).await, f.stock(2).await), (99, 99), "only the winner's updates committed");
    f.app.gate.add_permits(10);
    let attempt = Attempt {
        hold: true,
        first: if loser_key == "d-one" { 1 } else { 2 },
        ..failing(&lost, Failure::Deadlock, 422)
    };
    let retry = f.send("/attempts", loser_key, &attempt).await;
    assert!(retry.replayed(), "{:?}", retry.body);
    assert_eq!((retry.status, &retry.body), (loser.status, &loser.body));
    assert_eq!(f.runs(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadlock_answered_409_runs_again_and_succeeds() {
    let Some(mut f) = Fixture::new("tx_err_deadlock_released", false).await else { return };
    let (one, two) = deadlock(&mut f, 409).await;
    let (loser, winner, loser_key) = loser_and_winner(&one, &two);
    assert_eq!(winner.status, StatusCode::CREATED, "{:?}", winner.body);
    assert_answered(loser, 409, "40P01");
    let lost = loser.json()["item"].as_str().unwrap().to_owned();
    f.app.gate.add_permits(10);
    let attempt = Attempt {
        hold: true,
        first: if loser_key == "d-one" { 1 } else { 2 },
        ..failing(&lost, Failure::Deadlock, 409)
    };
    let retry = f.send("/attempts", loser_key, &attempt).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
    assert!(!retry.replayed());
    assert_eq!((f.orders(&lost).await, f.stock(1).await, f.stock(2).await, f.runs()), (1, 98, 98, 3));
}

/// Terminates the backend of the run that holds, then lets it go on; returns its reply.
async fn killed(f: &mut Fixture, key: &'static str, attempt: Attempt) -> Reply {
    let run = f.spawn("/attempts", key, attempt);
    let pid = f.reached.recv().await.unwrap();
    let ended: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)").bind(pid).fetch_one(&f.pool).await.unwrap();
    assert!(ended);
    f.app.gate.add_permits(1);
    run.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_connection_answered_422_cannot_be_stored_so_idem_answers_503_and_the_retry_succeeds() {
    let Some(mut f) = Fixture::new("tx_err_killed_kept", false).await else { return };
    let attempt = failing("vane", Failure::ConnectionKilled, 422);
    let first = killed(&mut f, "k1", failing("vane", Failure::ConnectionKilled, 422)).await;
    // The transaction is gone with its connection: nothing can be stored, and nothing was kept.
    first.assert_problem(503, "urn:idem:problem:store-unavailable");
    assert_eq!(f.orders("vane").await, 0);
    f.app.gate.add_permits(1);
    let retry = f.send("/attempts", "k1", &attempt).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
    assert!(!retry.replayed());
    assert_eq!((f.orders("vane").await, f.runs()), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_connection_answered_503_by_the_handler_reaches_the_client_and_the_retry_succeeds() {
    let Some(mut f) = Fixture::new("tx_err_killed_released", false).await else { return };
    let attempt = failing("flag", Failure::ConnectionKilled, 503);
    let first = killed(&mut f, "k2", failing("flag", Failure::ConnectionKilled, 503)).await;
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.json()["item"], "flag", "the handler's own answer: {:?}", first.body);
    assert_eq!(f.orders("flag").await, 0);
    f.app.gate.add_permits(1);
    let retry = f.send("/attempts", "k2", &attempt).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
    assert_eq!((f.orders("flag").await, f.runs()), (1, 2));
    drop(f.schema);
}
