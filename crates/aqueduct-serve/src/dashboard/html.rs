//! HTML writing: every value that came from outside (patient data, source URLs, error texts)
//! goes through [`esc`]; the page frame and a few helpers.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

/// The text escaped for an HTML text node or a double- or single-quoted attribute value.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A path segment percent-encoded for a link (connection names, source ids).
pub fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn opt_time(t: Option<&DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "never".into())
}

/// The content security policy of dashboard pages: no script at all, styles and forms from
/// this server only, inline SVG allowed (it is markup, not an image fetch).
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                   base-uri 'none'; frame-ancestors 'none'";

/// A whole page: the navigation (with the logout form when signed in) around `body`.
pub struct Page {
    pub title: String,
    pub body: String,
    /// The session's CSRF token and organization, when signed in.
    pub signed_in: Option<(String, String)>,
    /// Reload the page every this many seconds (a sync that is still running).
    pub refresh_secs: Option<u32>,
    pub status: StatusCode,
}

impl Page {
    pub fn new(title: impl Into<String>, body: String) -> Self {
        Self {
            title: title.into(),
            body,
            signed_in: None,
            refresh_secs: None,
            status: StatusCode::OK,
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut h = String::with_capacity(self.body.len() + 1024);
        h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
        h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
        if let Some(s) = self.refresh_secs {
            let _ = write!(h, "<meta http-equiv=\"refresh\" content=\"{s}\">");
        }
        let _ = write!(
            h,
            "<title>{} · Aqueduct</title><link rel=\"stylesheet\" href=\"/dashboard/static/style.css\"></head><body>",
            esc(&self.title)
        );
        h.push_str("<header><a class=\"brand\" href=\"/dashboard/\">Aqueduct</a>");
        if let Some((csrf, org)) = &self.signed_in {
            let _ = write!(
                h,
                "<nav><a href=\"/dashboard/\">Connections</a><a href=\"/dashboard/findings\">Findings &amp; alerts</a>\
                 <a href=\"/dashboard/terminology\">Terminology</a></nav>\
                 <span class=\"org\">{}</span>\
                 <form method=\"post\" action=\"/dashboard/logout\" class=\"inline\">{}<button type=\"submit\">Log out</button></form>",
                esc(org),
                csrf_field(csrf)
            );
        }
        h.push_str("</header><main>");
        let _ = write!(h, "<h1>{}</h1>", esc(&self.title));
        h.push_str(&self.body);
        h.push_str("</main></body></html>\n");
        let mut r = (self.status, h).into_response();
        let hd = r.headers_mut();
        hd.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        hd.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        r
    }
}

/// The hidden form field every POST carries.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

/// A page that says what went wrong, with its status.
pub fn error_page(status: StatusCode, message: &str) -> Page {
    let mut p = Page::new(
        status.canonical_reason().unwrap_or("Error"),
        format!(
            "<p class=\"error\">{}</p><p><a href=\"/dashboard/\">Back to the dashboard</a></p>",
            esc(message)
        ),
    );
    p.status = status;
    p
}

/// A `<span>` coloured by a run or connection state.
pub fn badge(state: &str) -> String {
    let class = match state {
        "complete" | "done" | "resolved" => "ok",
        "partial" | "running" | "pending" | "claimed" | "never-synced" => "warn",
        _ => "bad",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_data_is_text() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
        assert_eq!(seg("a b/c?d"), "a%20b%2Fc%3Fd");
    }
}
