//! The demo's simulated payment provider: it charges once per `Idempotency-Key` it receives, as
//! providers that honour keys do, and counts every request it received for each key.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use idem_runtime::key::IDEMPOTENCY_KEY;
use idem_runtime::record::IDEMPOTENT_REPLAYED;
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;

use super::{problem, Problem};

/// A charge to make.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct NewCharge {
    /// In the currency's smallest unit.
    pub(super) amount: u32,
}

/// A charge made, as the provider answers it.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct ChargeMade {
    pub(super) id: String,
    pub(super) amount: u32,
}

/// A charge made, with the key it was made under and the requests received for that key.
#[derive(Clone, Serialize, utoipa::ToSchema)]
pub(super) struct Charge {
    id: String,
    key: String,
    amount: u32,
    /// Requests received with this key: the first made the charge, the others were answered with it.
    requests: u32,
}

/// Where the provider keeps its charges: in memory, or in PostgreSQL (`--store postgres://…`).
#[derive(Clone)]
pub(super) enum Charges {
    Memory(Arc<Mutex<Vec<Charge>>>),
    Db(PgPool),
}

const CHARGES_TABLE: &str = "CREATE TABLE IF NOT EXISTS idem_demo_charges (
    id bigserial PRIMARY KEY,
    key text NOT NULL UNIQUE,
    amount bigint NOT NULL,
    requests integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now()
)";

/// The charge made under the key, made now if there is none; every request is counted.
const CHARGE: &str = "INSERT INTO idem_demo_charges (key, amount) VALUES ($1, $2)
    ON CONFLICT (key) DO UPDATE SET requests = idem_demo_charges.requests + 1
    RETURNING id, amount, requests";

impl Charges {
    /// The charges table in `pool`'s database, created if missing.
    pub(super) async fn in_db(pool: PgPool) -> Result<Self, sqlx::Error> {
        sqlx::query(CHARGES_TABLE).execute(&pool).await?;
        Ok(Self::Db(pool))
    }

    /// The charge made under `key`, made now for `amount` if there is none.
    async fn charge(&self, key: &str, amount: u32) -> Result<Charge, sqlx::Error> {
        match self {
            Self::Memory(charges) => {
                let mut charges = charges.lock().expect("charges lock");
                if let Some(charge) = charges.iter_mut().find(|charge| charge.key == key) {
                    charge.requests += 1;
                    return Ok(charge.clone());
                }
                let id = format!("ch_{}", charges.len() + 1);
                let charge = Charge { id, key: key.to_owned(), amount, requests: 1 };
                charges.push(charge.clone());
                Ok(charge)
            }
            Self::Db(pool) => {
                let (id, amount, requests): (i64, i64, i32) =
                    sqlx::query_as(CHARGE).bind(key).bind(i64::from(amount)).fetch_one(pool).await?;
                Ok(Charge {
                    id: format!("ch_{id}"),
                    key: key.to_owned(),
                    amount: amount as u32,
                    requests: requests as u32,
                })
            }
        }
    }

    async fn all(&self) -> Result<Vec<Charge>, sqlx::Error> {
        match self {
            Self::Memory(charges) => Ok(charges.lock().expect("charges lock").clone()),
            Self::Db(pool) => {
                let rows: Vec<(i64, String, i64, i32)> =
                    sqlx::query_as("SELECT id, key, amount, requests FROM idem_demo_charges ORDER BY id")
                        .fetch_all(pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, key, amount, requests)| Charge {
                        id: format!("ch_{id}"),
                        key,
                        amount: amount as u32,
                        requests: requests as u32,
                    })
                    .collect())
            }
        }
    }
}

/// Make a charge, once per `Idempotency-Key`: a request with a key already charged gets that
/// charge back (`Idempotent-Replayed: true`) and charges nothing.
#[utoipa::path(post, path = "/provider/charges", security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "The charge's key: one charge per key, at most 255 bytes")),
    responses(
        (status = 201, description = "The charge, made now or replayed", body = ChargeMade),
        (status = 400, description = "No `Idempotency-Key` or one longer than 255 bytes (a problem), or a body that is not JSON (text)",
            content((Problem = "application/problem+json"), (String = "text/plain"))),
        (status = 401, description = "No `Authorization: Bearer <token>`", content_type = "application/problem+json", body = Problem),
        (status = 413, description = "The body is larger than the router accepts", body = String),
        (status = 415, description = "The body is not sent as `application/json`", body = String),
        (status = 422, description = "The key was charged for another amount (a problem), or the JSON does not have the expected fields (text)",
            content((Problem = "application/problem+json"), (String = "text/plain"))),
        (status = 503, description = "The provider's database is unavailable", content_type = "application/problem+json", body = Problem),
    ))]
pub(super) async fn create_charge(
    State(charges): State<Charges>,
    headers: HeaderMap,
    Json(new): Json<NewCharge>,
) -> Response {
    let key =
        headers.get(IDEMPOTENCY_KEY).and_then(|key| key.to_str().ok()).filter(|key| (1..=255).contains(&key.len()));
    let Some(key) = key else {
        return problem(
            StatusCode::BAD_REQUEST,
            "send Idempotency-Key (1 to 255 bytes): the provider charges once per key",
        );
    };
    match charges.charge(key, new.amount).await {
        Ok(charge) if charge.amount != new.amount => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("this Idempotency-Key was charged {} already, not {}", charge.amount, new.amount),
        ),
        Ok(charge) => {
            let mut response =
                (StatusCode::CREATED, Json(ChargeMade { id: charge.id, amount: charge.amount })).into_response();
            if charge.requests > 1 {
                response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            }
            response
        }
        Err(error) => super::pg::database_problem(error),
    }
}

/// Every charge, with its key and the requests received for it.
#[utoipa::path(get, path = "/provider/charges", security(("bearer" = [])), responses(
    (status = 200, description = "The charges", body = Vec<Charge>),
    (status = 401, description = "No `Authorization: Bearer <token>`", content_type = "application/problem+json", body = Problem),
    (status = 503, description = "The provider's database is unavailable", content_type = "application/problem+json", body = Problem),
))]
pub(super) async fn list_charges(State(charges): State<Charges>) -> Response {
    match charges.all().await {
        Ok(charges) => Json(charges).into_response(),
        Err(error) => super::pg::database_problem(error),
    }
}

/// The provider's routes.
pub(super) fn routes(charges: Charges) -> Router {
    Router::new().route("/provider/charges", post(create_charge).get(list_charges)).with_state(charges)
}
