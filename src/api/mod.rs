//! The HTTP API: the operations, the docs, and what wraps every request (body limit,
//! JSON for framework errors, CORS, access log).

mod bearer;
mod cors;
mod docs;
mod form;
mod health;
mod introspect;
mod metadata;
mod token;
mod totp;
mod users;

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use poem::{
    Endpoint, EndpointExt, IntoResponse, Request, Response, Route,
    error::ReadBodyError,
    http::{
        HeaderMap, HeaderValue, Method,
        header::{CONTENT_LENGTH, X_CONTENT_TYPE_OPTIONS},
        request::Parts,
    },
};
use poem_openapi::{OpenApiService, Tags};
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

pub use self::cors::Cors;
use crate::{
    auth::Auth,
    connections::{Arrived, Shortcut},
    error::{self, AllowedMethods},
    metrics::Metrics,
};

/// Request bodies larger than this are refused with 413 before they are read in full:
/// a login form is a few hundred bytes (a 1024-byte password percent-encodes to 3 KiB).
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// A client that has sent a request's headers gets this long to send its body.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

const DESCRIPTION: &str = "FastAPI's \"Simple OAuth2 with Password and Bearer\" in Rust, \
made secure: argon2id password hashes, random opaque tokens stored only as SHA-256 \
digests, expiry and revocation, rotating refresh tokens, and introspection for registered \
clients.\n\n\
Click **Authorize**, log in as `johndoe` / `secret` (tick the scopes you want), then try \
`GET /users/me`. `alice` / `secret2` is a disabled user.";

#[derive(Tags)]
enum ApiTags {
    /// Logging in and out
    Auth,
    /// The current user
    Users,
    /// Service status
    Health,
}

/// The whole service as one endpoint; `main` serves it and the tests call it.
pub fn app(auth: Arc<Auth>, cors: Arc<Cors>) -> impl Endpoint<Output = Response> {
    let metrics = auth.metrics().clone();
    let api = OpenApiService::new(
        (
            token::TokenApi { auth: auth.clone() },
            introspect::IntrospectionApi { auth: auth.clone() },
            metadata::MetadataApi { auth: auth.clone() },
            users::UsersApi { auth: auth.clone() },
            totp::TotpApi { auth: auth.clone() },
            health::HealthApi { auth },
        ),
        "simple-oauth2",
        env!("CARGO_PKG_VERSION"),
    )
    .description(DESCRIPTION);
    let spec = api.spec();
    let allowed = Arc::new(
        AllowedMethods::from_openapi(&spec)
            .with("/docs", "GET")
            .with("/docs/oauth-receiver.html", "GET")
            .with("/redoc", "GET")
            .with("/openapi.json", "GET"),
    );
    let docs = docs::Docs::new(&spec, &api.swagger_ui_html(), &api.redoc_html());
    let swagger_ui = docs.swagger_ui(api.swagger_ui());
    Route::new()
        .nest("/", api)
        .nest("/docs", swagger_ui)
        .nest("/redoc", docs.redoc())
        .at("/openapi.json", poem::get(docs.spec_endpoint()))
        .data(metrics.clone())
        .around(move |ep, req| {
            around_request(ep, req, allowed.clone(), metrics.clone(), cors.clone())
        })
}

/// What [`crate::connections::serve`] answers before a request reaches [`app`]: `GET /users/me`
/// for a token the cache holds (see [`users::me_from_cache`]) and `POST /token/introspect`
/// by a client and of a token the caches vouch for (see [`introspect::introspect_from_cache`]).
/// Those answers are finished like every other (headers, metrics, log line).
pub fn shortcut(auth: Arc<Auth>, cors: Arc<Cors>) -> Arc<dyn Shortcut> {
    let metrics = auth.metrics();
    Arc::new(Early {
        me: EarlyRoute::new(metrics, users::ME, "GET"),
        introspect: EarlyRoute::new(metrics, introspect::INTROSPECT, "POST"),
        auth,
        cors,
    })
}

struct Early {
    auth: Arc<Auth>,
    cors: Arc<Cors>,
    me: EarlyRoute,
    introspect: EarlyRoute,
}

/// What an early answer of one route counts: a handle for each, so that counting costs
/// no label lookup.
struct EarlyRoute {
    route: &'static str,
    /// The one method answered early on the route.
    method: &'static str,
    answers: Counter,
    /// Durations of its 200s, made on first use (as every other series).
    durations: OnceLock<Histogram>,
}

impl EarlyRoute {
    fn new(metrics: &Metrics, route: &'static str, method: &'static str) -> Self {
        Self {
            route,
            method,
            answers: metrics.early_answers(route),
            durations: OnceLock::new(),
        }
    }
}

impl Shortcut for Early {
    fn wants_body(&self, request: &Parts) -> bool {
        introspect::may_answer_early(request)
    }

    fn answer(
        &self,
        request: &mut Parts,
        body: &[u8],
        remote: SocketAddr,
        arrived: Instant,
    ) -> Option<Response> {
        let (early, mut response) = if introspect::may_answer_early(request) {
            let answer = introspect::introspect_from_cache(&self.auth, request, body, remote.ip());
            (&self.introspect, answer?)
        } else {
            (&self.me, users::me_from_cache(&self.auth, request)?)
        };
        early.answers.inc();
        self.cors
            .apply(&mut response, self.cors.allowed_origin(&request.headers));
        let metrics = self.auth.metrics();
        let method = method_label(&request.method);
        Some(finish_with(
            response,
            &request.method,
            request.uri.path(),
            arrived,
            |status, seconds| match status {
                200 if method == early.method => early
                    .durations
                    .get_or_init(|| metrics.request_durations(early.route, early.method, 200))
                    .observe(seconds),
                _ => metrics.request(early.route, method, status, seconds),
            },
        ))
    }
}

/// The metrics listener's app: `GET /metrics` in the text exposition format, and nothing
/// else.
pub fn metrics_app(metrics: Arc<Metrics>) -> impl Endpoint<Output = Response> {
    Route::new().at(
        "/metrics",
        poem::get(poem::endpoint::make_sync(move |_| {
            Response::builder()
                .content_type(crate::metrics::CONTENT_TYPE)
                .body(metrics.encode())
        })),
    )
}

/// The method as a metrics label: the usual ones by name, anything else as `other`.
fn method_label(method: &Method) -> &'static str {
    [
        Method::GET,
        Method::POST,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ]
    .iter()
    .find(|known| *known == method)
    .map_or("other", |known| known.as_str())
}

async fn around_request<E: Endpoint>(
    ep: Arc<E>,
    req: Request,
    allowed: Arc<AllowedMethods>,
    metrics: Arc<Metrics>,
    cors: Arc<Cors>,
) -> poem::Result<Response> {
    let started = req
        .extensions()
        .get::<Arrived>()
        .map_or_else(Instant::now, |arrived| arrived.0);
    let method = req.method().clone();
    // The path only: a query string could carry a token.
    let path = req.uri().path().to_owned();
    let origin = cors.allowed_origin(req.headers());
    let preflight = cors.preflight(&method, req.headers(), origin.as_ref());
    let mut response = match preflight {
        Some(response) => response,
        None => match limit_body(req, started + BODY_READ_TIMEOUT).await {
            Ok(req) => match ep.call(req).await {
                Ok(output) => output.into_response(),
                Err(err) => error::framework_error(err, &path, &allowed),
            },
            Err(response) => response,
        },
    };
    cors.apply(&mut response, origin);
    let route = allowed.route(&path).unwrap_or("unmatched");
    Ok(finish(response, route, &method, &path, started, &metrics))
}

/// What every answer gets, however it was made: `nosniff`, its place in the metrics and
/// its log line.
fn finish(
    response: Response,
    route: &'static str,
    method: &Method,
    path: &str,
    started: Instant,
    metrics: &Metrics,
) -> Response {
    let label = method_label(method);
    finish_with(response, method, path, started, |status, seconds| {
        metrics.request(route, label, status, seconds);
    })
}

/// [`finish`], with the duration recorded by `record` (status, seconds).
fn finish_with(
    mut response: Response,
    method: &Method,
    path: &str,
    started: Instant,
    record: impl FnOnce(u16, f64),
) -> Response {
    response
        .headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    record(status, elapsed.as_secs_f64());
    // At debug, as tower-http's TraceLayer does by default: a line per request written
    // synchronously cost a third of the throughput at the default level. Audit events
    // and errors stay at info and above.
    tracing::debug!(
        %method,
        path,
        status,
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}

/// Buffers the body up to [`MAX_BODY_BYTES`], or answers 413: at once when
/// `Content-Length` says it is too large, after that many bytes otherwise (chunked, or an
/// HTTP/2 stream that declares no length). A body that has not arrived in full by
/// `deadline` ([`BODY_READ_TIMEOUT`] after the request's head) gets 408.
/// Returns the request with its body buffered.
async fn limit_body(mut req: Request, deadline: Instant) -> Result<Request, Response> {
    if declared_length(req.headers()).is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(error::payload_too_large(MAX_BODY_BYTES));
    }
    let body = req.take_body();
    if body.is_empty() {
        req.set_body(body);
        return Ok(req);
    }
    // Boxed: the read's state is kilobytes, and a request without a body should not carry
    // it through every layer.
    let read = Box::pin(tokio::time::timeout_at(
        deadline.into(),
        body.into_bytes_limit(MAX_BODY_BYTES),
    ));
    match read.await {
        Ok(Ok(bytes)) => {
            req.set_body(bytes);
            Ok(req)
        }
        Ok(Err(ReadBodyError::PayloadTooLarge)) => Err(error::payload_too_large(MAX_BODY_BYTES)),
        Err(_) => Err(error::body_timeout()),
        Ok(Err(err)) => Err(error::framework_error(
            err.into(),
            req.uri().path(),
            &AllowedMethods::default(),
        )),
    }
}

/// The body's length as its `Content-Length` declares it, if it does.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}
