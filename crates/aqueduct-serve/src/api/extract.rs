//! Extractors whose rejections are problems (RFC 9457), not axum's plain-text messages, and
//! the caller of a request.

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::problem::Problem;

/// The authenticated caller and where the request came from (for the audit log).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub client_addr: Option<String>,
}

impl Caller {
    pub fn org(&self) -> &str {
        &self.principal.organization
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Problem::unauthorized("not authenticated"))?;
        let client_addr = parts
            .extensions
            .get::<ConnectInfo<crate::tls::ClientAddr>>()
            .map(|c| c.0.0.ip().to_string());
        Ok(Caller {
            principal,
            client_addr,
        })
    }
}

/// Query parameters; unknown or malformed ones are a 400 problem naming them.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Problem> {
        axum::extract::Query::<T>::from_request_parts(parts, s)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| Problem::bad_request(format!("query parameters: {}", e.body_text())))
    }
}

/// A JSON body; a malformed one is a 400 problem, an oversized one 413.
pub struct J<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for J<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, s: &S) -> Result<Self, Problem> {
        axum::Json::<T>::from_request(req, s)
            .await
            .map(|j| J(j.0))
            .map_err(|e| {
                let status = e.status();
                if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(status, "too-large", "the request body is too large")
                } else {
                    Problem::new(status, "bad-request", format!("body: {}", e.body_text()))
                }
            })
    }
}

/// Path segments; a malformed one reads as a route that does not exist.
pub struct P<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for P<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Problem> {
        axum::extract::Path::<T>::from_request_parts(parts, s)
            .await
            .map(|p| P(p.0))
            .map_err(|e| Problem::not_found(format!("path: {}", e.body_text())))
    }
}

/// `?limit=` of the list routes (lowered to `[serve] max_page_size`).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    // a u32, not int32
    #[param(value_type = Option<i64>, minimum = 0.0, maximum = 4_294_967_295.0)]
    pub limit: Option<u32>,
}
