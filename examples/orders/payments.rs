//! The demo's payments: each charges the provider in a step, under a key derived from the
//! payment's own, then writes the payment (through `Tx` with `--store postgres://…`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use idem_runtime::client::{ClientConfig, IdempotencyKeyExt as _};
use idem_runtime::downstream::DownstreamKeys;
use idem_runtime::postgres::Tx;
use idem_runtime::steps::{StepError, Steps};
use idem_runtime::store::PgStore;
use idem_runtime::{defaults, idempotent, Defaults};
use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;

use super::provider::{ChargeMade, NewCharge};
use super::{pg::database_problem, problem, Caller, Problem, Refusals};

/// A payment to make.
#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct NewPayment {
    /// In the currency's smallest unit; more than zero.
    #[schema(value_type = u32, minimum = 1)]
    amount: NonZeroU32,
}

/// A payment made, with the provider's charge.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub(super) struct Payment {
    id: String,
    amount: u32,
    charge: String,
}

/// What the payment handlers share: the provider, and the delay between the charge and the
/// payment's write (`--handler-delay-ms`, where a crash test aims).
#[derive(Clone)]
pub(super) struct Payer {
    provider: String,
    http: ClientWithMiddleware,
    delay: Duration,
}

/// The token the demo pays the provider with.
const MERCHANT: &str = "demo-merchant";

impl Payer {
    /// Pays through the provider at `provider` (`http://HOST:PORT`).
    pub(super) fn new(provider: String, delay: Duration) -> Self {
        // Retries (same key) end within the payment's 5 s lease.
        let http = ClientConfig::new().deadline(Duration::from_secs(4)).build(reqwest::Client::new());
        Self { provider, http, delay }
    }

    /// Charges `amount` in the step `charge`: made once by the provider (the derived key), and
    /// not asked again once kept (the step). Then pauses for `--handler-delay-ms`, before the
    /// payment is written.
    async fn charge(&self, keys: &DownstreamKeys, steps: &Steps, amount: u32) -> Result<ChargeMade, Response> {
        let call = || async {
            let response = (self.http.post(format!("{}/provider/charges", self.provider)))
                .bearer_auth(MERCHANT)
                .json(&NewCharge { amount })
                .idempotency_key(keys.key("charge"))
                .send()
                .await
                .map_err(|error| (StatusCode::SERVICE_UNAVAILABLE, format!("the provider is unreachable: {error}")))?;
            let status = response.status();
            if !status.is_success() {
                let detail = response.text().await.unwrap_or_default();
                let status = if status.is_client_error() { status } else { StatusCode::SERVICE_UNAVAILABLE };
                return Err((status, format!("the provider refused the charge: {detail}")));
            }
            response.json::<ChargeMade>().await.map_err(|error| (StatusCode::BAD_GATEWAY, error.to_string()))
        };
        let charge = steps.run("charge", call).await.map_err(|error| match error {
            StepError::Step((status, detail)) if status == StatusCode::UNPROCESSABLE_ENTITY => {
                problem(StatusCode::UNPROCESSABLE_ENTITY, &detail)
            }
            StepError::Step((_, detail)) => problem(StatusCode::SERVICE_UNAVAILABLE, &detail),
            StepError::Busy => {
                let mut busy = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "an earlier attempt of this payment is charging right now; retry with the same key",
                );
                busy.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                busy
            }
            StepError::Store(error) => {
                problem(StatusCode::SERVICE_UNAVAILABLE, &format!("the charge could not be kept: {error}"))
            }
            StepError::Unkept(why) => {
                problem(StatusCode::INTERNAL_SERVER_ERROR, &format!("the charge cannot be kept: {why}"))
            }
            _ => problem(StatusCode::INTERNAL_SERVER_ERROR, "the charge step was refused"),
        })?;
        tokio::time::sleep(self.delay).await;
        Ok(charge)
    }
}

/// What every way of making a payment shares: a key, and a 5 s lease (a crashed instance's
/// payment is taken over 5 s later).
const PAYMENTS: Defaults = defaults!(required, ttl = "24h", scope = "pat", lease = "5s");

/// Payments in memory (the embedded and the Redis stores).
#[derive(Clone)]
pub(super) struct MemoryPayments {
    payer: Payer,
    payments: Arc<Mutex<HashMap<Caller, Vec<Payment>>>>,
    next_id: Arc<AtomicU64>,
}

/// Payments in the PostgreSQL store's database, written through `Tx`.
#[derive(Clone)]
pub(super) struct TxPayments {
    payer: Payer,
    pool: PgPool,
    store: PgStore,
}

impl FromRef<TxPayments> for PgStore {
    fn from_ref(state: &TxPayments) -> PgStore {
        state.store.clone()
    }
}

fn created(payment: Payment) -> Response {
    (StatusCode::CREATED, [(header::LOCATION, format!("/payments/{}", payment.id))], Json(payment)).into_response()
}

/// Make a payment: the provider is charged once, whatever happens to this request's attempts.
#[utoipa::path(post, path = "/payments", security(("bearer" = [])), responses(
    (status = 201, description = "The payment", body = Payment, headers(("Location" = String, description = "The payment's URL"))),
    (status = 503, description = "The provider or a database is unavailable, or an earlier attempt is charging: retry with the same key", content_type = "application/problem+json", body = Problem),
    Refusals,
))]
#[idempotent(defaults = PAYMENTS)]
pub(super) async fn create_payment(
    State(state): State<MemoryPayments>,
    Extension(caller): Extension<Caller>,
    keys: DownstreamKeys,
    steps: Steps,
    Json(new): Json<NewPayment>,
) -> Response {
    let charge = match state.payer.charge(&keys, &steps, new.amount.get()).await {
        Ok(charge) => charge,
        Err(refused) => return refused,
    };
    let id = format!("pay_{}", state.next_id.fetch_add(1, Ordering::SeqCst) + 1);
    let payment = Payment { id, amount: charge.amount, charge: charge.id };
    state.payments.lock().expect("payments lock").entry(caller).or_default().push(payment.clone());
    created(payment)
}

const PAYMENTS_TABLE: &str = "CREATE TABLE IF NOT EXISTS idem_demo_payments (
    id bigserial PRIMARY KEY,
    owner text NOT NULL,
    amount bigint NOT NULL,
    charge text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// [`create_payment`] with the payments in PostgreSQL: the payment and the stored response commit
/// together; the charge, kept as a step outside the transaction, survives its rollback.
#[idempotent(defaults = PAYMENTS)]
pub(super) async fn create_payment_in_tx(
    State(state): State<TxPayments>,
    Extension(caller): Extension<Caller>,
    keys: DownstreamKeys,
    steps: Steps,
    mut tx: Tx,
    Json(new): Json<NewPayment>,
) -> Response {
    let charge = match state.payer.charge(&keys, &steps, new.amount.get()).await {
        Ok(charge) => charge,
        Err(refused) => return refused,
    };
    let inserted: Result<i64, _> =
        sqlx::query_scalar("INSERT INTO idem_demo_payments (owner, amount, charge) VALUES ($1, $2, $3) RETURNING id")
            .bind(&caller.0)
            .bind(i64::from(charge.amount))
            .bind(&charge.id)
            .fetch_one(&mut *tx)
            .await;
    match inserted {
        Ok(id) => created(Payment { id: format!("pay_{id}"), amount: charge.amount, charge: charge.id }),
        Err(error) => database_problem(error),
    }
}

/// The caller's payments.
#[utoipa::path(get, path = "/payments", security(("bearer" = [])), responses(
    (status = 200, description = "The payments", body = Vec<Payment>),
    (status = 401, description = "No `Authorization: Bearer <token>`", content_type = "application/problem+json", body = Problem),
))]
pub(super) async fn list_payments(
    State(state): State<MemoryPayments>,
    Extension(caller): Extension<Caller>,
) -> Response {
    Json(state.payments.lock().expect("payments lock").get(&caller).cloned().unwrap_or_default()).into_response()
}

async fn list_payments_in_db(State(state): State<TxPayments>, Extension(caller): Extension<Caller>) -> Response {
    let rows: Result<Vec<(i64, i64, String)>, _> =
        sqlx::query_as("SELECT id, amount, charge FROM idem_demo_payments WHERE owner = $1 ORDER BY id")
            .bind(&caller.0)
            .fetch_all(&state.pool)
            .await;
    match rows {
        Ok(rows) => Json(
            rows.into_iter()
                .map(|(id, amount, charge)| Payment { id: format!("pay_{id}"), amount: amount as u32, charge })
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(error) => database_problem(error),
    }
}

/// The payment routes, with the payments in memory.
pub(super) fn in_memory(payer: Payer) -> Router {
    let state = MemoryPayments { payer, payments: Arc::default(), next_id: Arc::default() };
    Router::new().route("/payments", post(create_payment).get(list_payments)).with_state(state)
}

/// The payment routes, with the payments in the store's database (the table created if missing).
pub(super) async fn in_db(payer: Payer, pool: PgPool, store: PgStore) -> Result<Router, sqlx::Error> {
    sqlx::query(PAYMENTS_TABLE).execute(&pool).await?;
    let state = TxPayments { payer, pool, store };
    Ok(Router::new().route("/payments", post(create_payment_in_tx).get(list_payments_in_db)).with_state(state))
}
