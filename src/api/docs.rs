//! `/docs`: Swagger UI, gzipped once (at the first request that accepts gzip, so start-up
//! stays fast), with headers that keep the page where users type their password out of
//! other sites' frames.

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

/// The Swagger UI page, as sent with and without gzip.
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

/// The `/docs` routes: the page (`/docs`, `/docs/`) and Swagger UI's OAuth2 receiver.
pub fn routes(html: String, swagger_ui: impl IntoEndpoint<Endpoint: 'static>) -> impl Endpoint {
    let page = Arc::new(Page::new(html));
    let index = poem::endpoint::make(move |req: Request| {
        let page = page.clone();
        async move { page.respond(&req).await }
    });
    Route::new()
        .at("/", poem::get(index))
        .at("/oauth-receiver.html", poem::get(swagger_ui))
        .with(
            SetHeader::new()
                .overriding(
                    "content-security-policy",
                    HeaderValue::from_static(CONTENT_SECURITY_POLICY),
                )
                .overriding("x-frame-options", HeaderValue::from_static("DENY")),
        )
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
