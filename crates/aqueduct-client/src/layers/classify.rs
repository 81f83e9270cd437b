//! What an answer really is: the layer that turns an [`Exchange`] into a [`FhirResponse`] or a
//! [`FetchError`] of the right kind.
//!
//! Servers lie in a few known ways, and each gets its own kind so the retry layer and the
//! ledger can tell them apart: a body shorter than its Content-Length (truncated), a status
//! outside 2xx (with the server's OperationOutcome and `Retry-After` kept in the error), an
//! HTML page under 200 (a login form or an error page), a body that is not JSON. It also
//! stamps the attempt number on whatever passes through it, so the answer says which try it
//! came from.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, DATE};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tower::{Layer, Service};

use super::{Attempt, BoxFuture, Exchange};
use crate::client::{Expect, FhirRequest, FhirResponse};
use crate::error::{Answer, FetchError, FetchErrorKind};
use crate::fhir::OperationOutcome;
use crate::headers::parse_retry_after;

/// Adds [`Classify`] over a service answering [`Exchange`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClassifyLayer;

impl<S> Layer<S> for ClassifyLayer {
    type Service = Classify<S>;

    fn layer(&self, inner: S) -> Classify<S> {
        Classify { inner }
    }
}

/// See the [module](self) documentation.
#[derive(Debug, Clone)]
pub struct Classify<S> {
    inner: S,
}

impl<S> Service<Attempt> for Classify<S>
where
    S: Service<Attempt, Response = Exchange, Error = FetchError>,
    S::Future: Send + 'static,
{
    type Response = FhirResponse;
    type Error = FetchError;
    type Future = BoxFuture<Result<FhirResponse, FetchError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), FetchError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let request = Arc::clone(&attempt.request);
        let number = attempt.number;
        let started = Instant::now();
        let exchange = self.inner.call(attempt);
        Box::pin(async move {
            match exchange.await.and_then(|ex| classify(&request, ex)) {
                Ok(mut resp) => {
                    resp.attempts = number;
                    resp.duration = started.elapsed();
                    Ok(resp)
                }
                Err(mut err) => {
                    err.attempts = number;
                    Err(err)
                }
            }
        })
    }
}

#[derive(Deserialize)]
struct BodyShape {
    #[serde(rename = "resourceType", default)]
    resource_type: Option<String>,
    #[serde(default)]
    entry: Option<Vec<IgnoredAny>>,
}

/// Judges one exchange made for `req`. Errors name `req.url` (what was asked for), not the
/// URL a redirect ended at.
pub fn classify(req: &FhirRequest, ex: Exchange) -> Result<FhirResponse, FetchError> {
    let url_s = req.url.as_str();
    let Exchange {
        status,
        url,
        headers,
        body,
        received,
        content_length,
        large_body_lane,
    } = ex;
    // Checked before the status: a cut-off error page says nothing reliable either.
    if let Some(cl) = content_length.filter(|cl| received < *cl) {
        return Err(FetchError::new(
            FetchErrorKind::Truncated,
            url_s,
            format!("body of {received} bytes, Content-Length {cl}"),
        )
        .with_answer(headers, received));
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !(200..300).contains(&status) {
        let mut err = FetchError::new(FetchErrorKind::Http(status), url_s, "");
        err.retry_after = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let mut answer = Answer {
            headers,
            bytes: received,
            outcome_codes: Box::default(),
        };
        if let Some(o) = OperationOutcome::parse(&body) {
            err.outcome = Some(o.summary().into_boxed_str());
            answer.outcome_codes = o.issue.iter().filter_map(|i| i.code.clone()).collect();
        }
        err.answer = Some(Box::new(answer));
        return Err(err);
    }
    let mut resource_type = None;
    let mut resources = 0;
    let fail = |kind, message: String, headers| {
        FetchError::new(kind, url_s, message).with_answer(headers, received)
    };
    if req.expect == Expect::Json {
        let looks_html = content_type.as_deref().is_some_and(|c| c.contains("html"))
            || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<');
        if looks_html {
            return Err(fail(
                FetchErrorKind::Html200,
                "an HTML page instead of FHIR JSON".into(),
                headers,
            ));
        }
        match serde_json::from_slice::<BodyShape>(&body) {
            Ok(shape) => {
                resources = match (&shape.entry, shape.resource_type.as_deref()) {
                    (Some(e), _) => e.len() as u64,
                    (None, Some("Bundle")) => 0,
                    (None, Some(_)) => 1,
                    (None, None) => 0,
                };
                resource_type = shape.resource_type;
            }
            Err(_) => {
                // Valid JSON of another shape (an array, a string) is let through; only a
                // body that is not JSON at all is an error, and one cut short is truncated.
                if let Err(e) = serde_json::from_slice::<IgnoredAny>(&body) {
                    let kind = if e.is_eof() {
                        FetchErrorKind::Truncated
                    } else {
                        FetchErrorKind::InvalidJson
                    };
                    return Err(fail(kind, format!("body is not JSON: {e}"), headers));
                }
            }
        }
    }
    if req.expect == Expect::Any && content_type.as_deref().is_some_and(|c| c.contains("json")) {
        // Not required to be JSON, but say what it is when it is.
        if let Ok(shape) = serde_json::from_slice::<BodyShape>(&body) {
            resources = u64::from(shape.resource_type.is_some());
            resource_type = shape.resource_type;
        }
    }
    let server_date = headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(DateTime::<Utc>::from);
    Ok(FhirResponse {
        status,
        url,
        body,
        content_type,
        server_date,
        resource_type,
        resources,
        attempts: 1,
        duration: std::time::Duration::ZERO,
        large_body_lane,
        headers,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use reqwest::header::HeaderMap;

    fn exchange(status: u16, content_type: &str, body: &'static [u8]) -> Exchange {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, content_type.parse().unwrap());
        Exchange {
            status,
            url: url::Url::parse("http://h/fhir/Patient").unwrap(),
            headers,
            body: bytes::Bytes::from_static(body),
            received: body.len() as u64,
            content_length: Some(body.len() as u64),
            large_body_lane: None,
        }
    }

    fn req() -> FhirRequest {
        FhirRequest::new(url::Url::parse("http://h/fhir/Patient").unwrap())
    }

    #[test]
    fn a_bundle_is_counted() {
        let r = classify(
            &req(),
            exchange(
                200,
                "application/fhir+json",
                br#"{"resourceType":"Bundle","entry":[{},{}]}"#,
            ),
        )
        .unwrap();
        assert_eq!(r.resource_type.as_deref(), Some("Bundle"));
        assert_eq!(r.resources, 2);
    }

    #[test]
    fn a_short_body_is_truncated_whatever_its_status() {
        let mut ex = exchange(500, "application/fhir+json", b"{}");
        ex.content_length = Some(100);
        let e = classify(&req(), ex).unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::Truncated);
        assert_eq!(e.bytes(), 2);
    }

    #[test]
    fn an_error_status_keeps_the_outcome_and_retry_after() {
        let mut ex = exchange(
            503,
            "application/fhir+json",
            br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"transient"}]}"#,
        );
        ex.headers.insert("retry-after", "2".parse().unwrap());
        let e = classify(&req(), ex).unwrap_err();
        assert_eq!(e.kind, FetchErrorKind::Http(503));
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(2)));
        assert!(e.has_outcome_code("transient"));
        assert!(e.answer.unwrap().headers.contains_key("retry-after"));
    }

    #[test]
    fn html_and_broken_json_under_200_are_errors() {
        let html = exchange(200, "text/html", b"<html>login</html>");
        assert_eq!(
            classify(&req(), html).unwrap_err().kind,
            FetchErrorKind::Html200
        );
        let cut = exchange(200, "application/fhir+json", br#"{"resourceType":"Bun"#);
        assert_eq!(
            classify(&req(), cut).unwrap_err().kind,
            FetchErrorKind::Truncated
        );
        let junk = exchange(200, "application/fhir+json", b"{not json}");
        assert_eq!(
            classify(&req(), junk).unwrap_err().kind,
            FetchErrorKind::InvalidJson
        );
        // A Binary is whatever it is.
        let binary = exchange(200, "text/html", b"<html>a letter</html>");
        assert!(classify(&req().expect(Expect::Any), binary).is_ok());
    }
}
