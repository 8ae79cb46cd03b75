//! CORS for the exact origins of `CORS_ALLOWED_ORIGINS`, so that a single-page app on
//! another origin can log in and call the API. Off when the list is empty: no
//! `Access-Control-*` header at all.
//!
//! A request from any other origin is served as before, only without CORS headers (the
//! browser then keeps the answer from the page): refusing it would break this origin's
//! own pages, since browsers send `Origin` on same-origin POSTs too.

use poem::{
    Response,
    http::{
        HeaderMap, HeaderValue, Method, StatusCode,
        header::{
            ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
            ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
        },
    },
};

/// The methods the API answers.
const ALLOW_METHODS: &str = "GET, POST, DELETE";
/// The request headers a page may send: a token, a form's type, a DPoP proof.
const ALLOW_HEADERS: &str = "Authorization, Content-Type, DPoP";
/// What a page may read of an answer besides the body: the challenge and the wait.
const EXPOSE_HEADERS: &str = "WWW-Authenticate, Retry-After";
/// How long a browser may reuse a preflight's answer, in seconds.
const MAX_AGE_SECS: &str = "600";

/// The origins allowed to call the API from a browser.
#[derive(Debug, Default)]
pub struct Cors {
    origins: Vec<HeaderValue>,
}

impl Cors {
    /// `origins` as the setting holds them (already checked to be exact origins).
    pub fn new(origins: &[String]) -> Self {
        Self {
            origins: origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect(),
        }
    }

    /// The request's `Origin` when it is one of the allowed ones (one header, exactly).
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        if self.origins.is_empty() {
            return None;
        }
        let mut values = headers.get_all(ORIGIN).iter();
        match (values.next(), values.next()) {
            (Some(origin), None) if self.origins.contains(origin) => Some(origin.clone()),
            _ => None,
        }
    }

    /// The 204 answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`)
    /// from an allowed origin; `None` for anything else, which is routed as usual.
    pub fn preflight(
        &self,
        method: &Method,
        headers: &HeaderMap,
        origin: Option<&HeaderValue>,
    ) -> Option<Response> {
        if method != Method::OPTIONS || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        origin?;
        Some(
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS)
                .header(ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS)
                .header(ACCESS_CONTROL_MAX_AGE, MAX_AGE_SECS)
                .finish(),
        )
    }

    /// Adds the CORS headers to any answer: `Vary: Origin` whenever CORS is on (the
    /// answer depends on it), and the origin itself when it is allowed.
    pub fn apply(&self, response: &mut Response, origin: Option<HeaderValue>) {
        if self.origins.is_empty() {
            return;
        }
        let headers = response.headers_mut();
        headers.append(VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSE_HEADERS),
            );
        }
    }
}
