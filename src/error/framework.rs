//! Errors no handler answered (unknown path, wrong method, unreadable body), in the same
//! JSON as every other error, with `Allow` on a 405.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Mutex, PoisonError},
};

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::payload::Json;

use super::Detail;

/// The methods each path answers, for the `Allow` header of a 405; its paths are also the
/// route templates requests are counted by.
#[derive(Debug, Default, Clone)]
pub struct AllowedMethods(HashMap<&'static str, String>);

/// A route template as a `'static` label. There are a dozen, fixed by the code: each is
/// kept once for the life of the process, however many apps are built.
fn route_label(path: &str) -> &'static str {
    static ROUTES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut routes = ROUTES.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(route) = routes.get(path) {
        return route;
    }
    let route: &'static str = Box::leak(path.to_owned().into_boxed_str());
    routes.insert(route);
    route
}

impl AllowedMethods {
    /// Reads the paths and methods of an OpenAPI document.
    pub fn from_openapi(spec: &str) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let paths = spec["paths"].as_object().into_iter().flatten();
        Self(
            paths
                .map(|(path, operations)| {
                    let methods: Vec<_> = operations
                        .as_object()
                        .into_iter()
                        .flat_map(|ops| ops.keys())
                        .map(|method| method.to_ascii_uppercase())
                        .collect();
                    (route_label(path), methods.join(", "))
                })
                .collect(),
        )
    }

    /// Adds a path served outside the OpenAPI document.
    pub fn with(mut self, path: &str, methods: &str) -> Self {
        self.0.insert(route_label(path), methods.to_owned());
        self
    }

    fn get(&self, path: &str) -> Option<&str> {
        self.0.get(self.route(path)?).map(String::as_str)
    }

    /// The route template `path` belongs to, if it is one of ours.
    pub fn route(&self, path: &str) -> Option<&'static str> {
        let path = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        self.0.get_key_value(path).map(|(route, _)| *route)
    }
}

/// Turns an error no handler answered in the API's format (unknown path, wrong method,
/// unreadable body, ...) into the same JSON as every other error. Errors that already
/// carry one of our responses pass through unchanged.
pub fn framework_error(err: poem::Error, path: &str, allowed: &AllowedMethods) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    match status {
        StatusCode::NOT_FOUND => detail_response(status, "Not Found"),
        StatusCode::METHOD_NOT_ALLOWED => {
            let mut response = detail_response(status, "Method Not Allowed");
            if let Some(Ok(value)) = allowed.get(path).map(str::parse) {
                response
                    .headers_mut()
                    .insert(poem::http::header::ALLOW, value);
            }
            response
        }
        _ => {
            if status.is_server_error() {
                tracing::error!(error = %err, %status, "unhandled error");
            }
            detail_response(status, status.canonical_reason().unwrap_or("Error"))
        }
    }
}

fn detail_response(status: StatusCode, detail: &str) -> Response {
    let body = Json(Detail {
        detail: detail.to_owned(),
    });
    (status, body).into_response()
}
