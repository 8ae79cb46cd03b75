//! `/docs` (Swagger UI), `/redoc` (ReDoc) and `/openapi.json`, served from the binary:
//! each page gzipped once (at the first request that accepts gzip, so start-up stays
//! fast), with headers that keep the page where users type their password out of other
//! sites' frames. The document lists the user's login first, so that it is the first
//! form of Swagger UI's Authorize dialog.

use std::{io::Write, sync::Arc};

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use poem::{
    Endpoint, EndpointExt, IntoEndpoint, Request, Response, Route,
    http::{
        HeaderValue,
        header::{ACCEPT_ENCODING, CONTENT_ENCODING, VARY},
    },
    middleware::SetHeader,
};
use tokio::sync::OnceCell;

/// Swagger UI runs inline scripts and styles and loads images from `data:` URLs; it talks
/// to this origin only. Nobody may frame it (clickjacking the Authorize dialog).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// ReDoc renders with web workers made from `blob:` URLs, and nothing else differs.
const REDOC_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; \
script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; \
base-uri 'none'; form-action 'self'; object-src 'none'";

/// ReDoc's page: poem-openapi's links Google Fonts, so the same script (embedded by its
/// `redoc` feature) goes in a page of our own, which loads nothing from another host.
const REDOC_TEMPLATE: &str = r#"<!DOCTYPE html>
<html>
  <head>
    <title>simple-oauth2 - ReDoc</title>
    <meta charset="utf-8"/>
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <style>body { margin: 0; padding: 0; }</style>
    <script charset="UTF-8">{:script}</script>
  </head>
  <body>
    <div id="redoc-container"></div>
    <script>
      Redoc.init({:spec}, {}, document.getElementById("redoc-container"));
    </script>
  </body>
</html>
"#;

/// The documentation pages and the document, from one OpenAPI document.
pub struct Docs {
    spec: String,
    swagger_ui: String,
    redoc: String,
}

impl Docs {
    /// `spec` as poem-openapi writes it, and its Swagger UI and ReDoc pages (which
    /// embed it).
    pub fn new(spec: &str, swagger_ui_html: &str, redoc_html: &str) -> Self {
        let ordered = login_first(spec);
        let redoc_script = redoc_html
            .split_once(r#"<script charset="UTF-8">"#)
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(script, _)| script);
        Self {
            swagger_ui: swagger_ui_html.replacen(spec, &ordered, 1),
            redoc: REDOC_TEMPLATE
                .replacen("{:script}", redoc_script, 1)
                .replacen("{:spec}", &ordered, 1),
            spec: ordered,
        }
    }

    /// `GET /openapi.json`.
    pub fn spec_endpoint(&self) -> impl Endpoint + use<> {
        let spec = Bytes::from(self.spec.clone());
        poem::endpoint::make_sync(move |_| {
            Response::builder()
                .content_type("application/json")
                .body(spec.clone())
        })
    }

    /// The `/docs` routes: the page (`/docs`, `/docs/`) and Swagger UI's OAuth2 receiver.
    pub fn swagger_ui<R>(&self, receiver: R) -> impl Endpoint + use<R>
    where
        R: IntoEndpoint<Endpoint: 'static>,
    {
        let route = Route::new()
            .at("/", poem::get(page_endpoint(self.swagger_ui.clone())))
            .at("/oauth-receiver.html", poem::get(receiver));
        with_page_headers(route, CONTENT_SECURITY_POLICY)
    }

    /// The `/redoc` route.
    pub fn redoc(&self) -> impl Endpoint + use<> {
        let route = Route::new().at("/", poem::get(page_endpoint(self.redoc.clone())));
        with_page_headers(route, REDOC_CONTENT_SECURITY_POLICY)
    }
}

/// `spec` with the OAuth2 security schemes (the user's login) before the others: Swagger
/// UI's Authorize dialog shows them in the document's order, and poem-openapi writes
/// them in alphabetical order.
fn login_first(spec: &str) -> String {
    let Ok(mut document) = serde_json::from_str::<serde_json::Value>(spec) else {
        return spec.to_owned();
    };
    if let Some(schemes) = document
        .pointer_mut("/components/securitySchemes")
        .and_then(serde_json::Value::as_object_mut)
    {
        let (login, others): (Vec<_>, Vec<_>) = std::mem::take(schemes)
            .into_iter()
            .partition(|(_, scheme)| scheme["type"] == "oauth2");
        schemes.extend(login.into_iter().chain(others));
    }
    serde_json::to_string_pretty(&document).unwrap_or_else(|_| spec.to_owned())
}

fn page_endpoint(html: String) -> impl Endpoint {
    let page = Arc::new(Page::new(html));
    poem::endpoint::make(move |req: Request| {
        let page = page.clone();
        async move { page.respond(&req).await }
    })
}

fn with_page_headers(route: Route, policy: &'static str) -> impl Endpoint {
    route.with(
        SetHeader::new()
            .overriding("content-security-policy", HeaderValue::from_static(policy))
            .overriding("x-frame-options", HeaderValue::from_static("DENY")),
    )
}

/// A documentation page, as sent with and without gzip.
struct Page {
    html: Bytes,
    gzipped: OnceCell<Bytes>,
}

impl Page {
    fn new(html: String) -> Self {
        Self {
            html: html.into(),
            gzipped: OnceCell::new(),
        }
    }

    async fn respond(&self, req: &Request) -> Response {
        let builder = Response::builder()
            .content_type("text/html; charset=utf-8")
            .header(VARY, "accept-encoding");
        if !accepts_gzip(req) {
            return builder.body(self.html.clone());
        }
        let gzipped = self
            .gzipped
            .get_or_init(|| {
                let html = self.html.clone();
                async move {
                    tokio::task::spawn_blocking(move || gzip(&html))
                        .await
                        .expect("gzip into memory does not panic")
                }
            })
            .await;
        builder
            .header(CONTENT_ENCODING, "gzip")
            .body(gzipped.clone())
    }
}

fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .expect("gzip into memory cannot fail")
        .into()
}

/// Whether `Accept-Encoding` lists gzip without refusing it (`;q=0`).
fn accepts_gzip(req: &Request) -> bool {
    req.headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

#[cfg(test)]
mod tests {
    use poem::http::header::CONTENT_TYPE;

    use super::*;

    fn request(accept_encoding: &str) -> Request {
        Request::builder()
            .header(ACCEPT_ENCODING, accept_encoding)
            .finish()
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        assert!(accepts_gzip(&request("gzip, deflate, br")));
        assert!(accepts_gzip(&request("br;q=1.0, GZIP;q=0.5")));
        assert!(!accepts_gzip(&request("gzip;q=0, identity")));
        assert!(!accepts_gzip(&request("br")));
        assert!(!accepts_gzip(&Request::default()));
    }

    #[test]
    fn the_login_comes_first_in_the_security_schemes() {
        let spec = r#"{"components": {"securitySchemes": {
            "ClientBasicAuth": {"type": "http"}, "OAuth2PasswordBearer": {"type": "oauth2"}}}}"#;
        let ordered: serde_json::Value = serde_json::from_str(&login_first(spec)).unwrap();
        let names: Vec<_> = ordered["components"]["securitySchemes"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(names, ["OAuth2PasswordBearer", "ClientBasicAuth"]);
    }

    #[tokio::test]
    async fn the_page_is_html_either_way() {
        let page = Page::new("<html>hello</html>".into());
        let plain = page.respond(&request("identity")).await;
        assert_eq!(plain.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(plain.headers().get(CONTENT_ENCODING).is_none());
        let gzipped = page.respond(&request("gzip")).await;
        assert_eq!(gzipped.headers()[CONTENT_ENCODING], "gzip");
    }
}
