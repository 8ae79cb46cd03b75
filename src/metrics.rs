//! Prometheus metrics: logins, refreshes, bearer checks, revocations, introspections,
//! DPoP proofs, second factors, password hashing, request durations, database errors, the token
//! cache and the answers made before the router, in the text exposition format, for the listener on `METRICS_ADDR` (never the
//! public port).
//!
//! Every label is a fixed word, a route template, a method or a status code: never a
//! username, a token or an address (unbounded, and a leak).

use std::sync::OnceLock;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheResult {
    result: &'static str,
}

/// The service's metrics; one set per running service.
pub struct Metrics {
    registry: Registry,
    logins: Family<Outcome, Counter>,
    refreshes: Family<Outcome, Counter>,
    refresh_token_reuse: Counter,
    bearer_checks: Family<Outcome, Counter>,
    revocations: Family<Kind, Counter>,
    introspections: Family<Outcome, Counter>,
    dpop_proofs: Family<Outcome, Counter>,
    second_factor: Family<Outcome, Counter>,
    requests: Family<Request, Histogram>,
    database_errors: Counter,
    /// Argon2 jobs running now.
    pub hashing_in_flight: Gauge,
    /// Logins waiting for a hashing slot.
    pub hashing_waiting: Gauge,
    /// Bearer checks the token cache answered, and those it could not (handles into
    /// `token_cache`: a counter's clone shares its value).
    pub token_cache_hits: Counter,
    pub token_cache_misses: Counter,
    token_cache: Family<CacheResult, Counter>,
    early_answers: Family<Route, Counter>,
    /// `bearer_checks{outcome="ok"}`, the most frequent count, made on first use (so the
    /// series appears when it first counts, as every other does).
    bearer_ok: OnceLock<Counter>,
}

fn request_duration_histogram() -> Histogram {
    // 0.1 ms to about 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("simple_oauth2");
        let token_cache = Family::<CacheResult, Counter>::default();
        let token_cache_hits = token_cache
            .get_or_create(&CacheResult { result: "hit" })
            .clone();
        let token_cache_misses = token_cache
            .get_or_create(&CacheResult { result: "miss" })
            .clone();
        let metrics = Self {
            logins: Family::default(),
            refreshes: Family::default(),
            refresh_token_reuse: Counter::default(),
            bearer_checks: Family::default(),
            revocations: Family::default(),
            introspections: Family::default(),
            dpop_proofs: Family::default(),
            second_factor: Family::default(),
            requests: Family::new_with_constructor(request_duration_histogram),
            database_errors: Counter::default(),
            hashing_in_flight: Gauge::default(),
            hashing_waiting: Gauge::default(),
            token_cache_hits,
            token_cache_misses,
            token_cache,
            early_answers: Family::default(),
            bearer_ok: OnceLock::new(),
            registry: Registry::default(),
        };
        registry.register(
            "logins",
            "Password-grant requests at the token endpoint, by outcome",
            metrics.logins.clone(),
        );
        registry.register(
            "refreshes",
            "Refresh-token-grant requests, by outcome",
            metrics.refreshes.clone(),
        );
        registry.register(
            "refresh_token_reuse",
            "Spent refresh tokens presented after the grace: sessions revoked as stolen",
            metrics.refresh_token_reuse.clone(),
        );
        registry.register(
            "bearer_checks",
            "Bearer-token checks on protected routes, by outcome",
            metrics.bearer_checks.clone(),
        );
        registry.register(
            "revocations",
            "Revocation requests, by what the token was",
            metrics.revocations.clone(),
        );
        registry.register(
            "introspections",
            "Introspection requests, by outcome",
            metrics.introspections.clone(),
        );
        registry.register(
            "dpop_proofs",
            "DPoP proofs checked, by outcome",
            metrics.dpop_proofs.clone(),
        );
        registry.register(
            "second_factor",
            "Second-factor (TOTP) checks at login and changes by users, by outcome",
            metrics.second_factor.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer a request, by route template, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "database_errors",
            "Requests that failed because the database did not answer",
            metrics.database_errors.clone(),
        );
        registry.register(
            "password_hashing_in_flight",
            "Argon2 jobs running now",
            metrics.hashing_in_flight.clone(),
        );
        registry.register(
            "password_hashing_waiting",
            "Logins waiting for a hashing slot",
            metrics.hashing_waiting.clone(),
        );
        registry.register(
            "token_cache_lookups",
            "Bearer checks answered by the token cache (hit) or not (miss)",
            metrics.token_cache.clone(),
        );
        registry.register(
            "early_answers",
            "Requests answered from the caches before the router, by route",
            metrics.early_answers.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn refresh(&self, outcome: &'static str) {
        self.refreshes.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn refresh_token_reused(&self) {
        self.refresh_token_reuse.inc();
    }

    pub fn bearer_check(&self, outcome: &'static str) {
        self.bearer_checks.get_or_create(&Outcome { outcome }).inc();
    }

    /// A bearer check that passed, counted without a label lookup.
    pub fn bearer_check_ok(&self) {
        self.bearer_ok
            .get_or_init(|| {
                self.bearer_checks
                    .get_or_create(&Outcome { outcome: "ok" })
                    .clone()
            })
            .inc();
    }

    pub fn revocation(&self, kind: &'static str) {
        self.revocations.get_or_create(&Kind { kind }).inc();
    }

    pub fn introspection(&self, outcome: &'static str) {
        self.introspections
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    /// A DPoP proof checked: `accepted` or `refused`.
    pub fn dpop_proof(&self, outcome: &'static str) {
        self.dpop_proofs.get_or_create(&Outcome { outcome }).inc();
    }

    /// A second-factor check at login (`required`, `passed`, `incorrect_code`) or a
    /// change by a user (`pending`, `enrolled`, `removed`, or why it was refused).
    pub fn second_factor(&self, outcome: &'static str) {
        self.second_factor.get_or_create(&Outcome { outcome }).inc();
    }

    pub fn database_error(&self) {
        self.database_errors.inc();
    }

    /// A request answered: `route` is its template, or `unmatched`.
    pub fn request(&self, route: &'static str, method: &'static str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&Request {
                route,
                method,
                status,
            })
            .observe(seconds);
    }

    /// The duration histogram of `route`, `method` and `status`: a handle, for the
    /// answers made before the router, so that recording one costs no label lookup.
    pub fn request_durations(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
    ) -> Histogram {
        self.requests
            .get_or_create(&Request {
                route,
                method,
                status,
            })
            .clone()
    }

    /// The counter of `route`'s answers from the caches before the router: a handle, so
    /// that counting one costs no label lookup.
    pub fn early_answers(&self, route: &'static str) -> Counter {
        self.early_answers.get_or_create(&Route { route }).clone()
    }

    /// Everything, in the text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
