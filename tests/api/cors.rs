//! CORS: off by default; on for the exact origins of `CORS_ALLOWED_ORIGINS`, on every
//! answer (errors, the cached `/users/me` included), and only for them.

use reqwest::{Method, Response};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const ALLOWED: &str = "https://app.example.com";

async fn spawn_app_with_cors() -> TestApp {
    spawn_app_with(|settings| {
        settings.cors_allowed_origins = vec![ALLOWED.into(), "http://localhost:3000".into()];
    })
    .await
}

fn cors_headers(response: &Response) -> Vec<String> {
    response
        .headers()
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

fn vary(response: &Response) -> Vec<String> {
    response
        .headers()
        .get_all("vary")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect()
}

/// A login, a bad login, a /users/me three times (the later ones from the cache), a 401,
/// a 404 and a 405, each with `origin`.
async fn every_kind_of_answer(app: &TestApp, origin: &str) -> Vec<Response> {
    let token = app.token_for("johndoe", "secret", "").await;
    let mut responses = vec![
        app.post("/token")
            .header("origin", origin)
            .form(&[("username", "johndoe"), ("password", "secret")])
            .send()
            .await
            .unwrap(),
        app.post("/token")
            .header("origin", origin)
            .form(&[("username", "johndoe"), ("password", "wrong")])
            .send()
            .await
            .unwrap(),
    ];
    for _ in 0..3 {
        let me = app
            .get("/users/me")
            .header("origin", origin)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 200);
        responses.push(me);
    }
    for request in [
        app.get("/users/me"),
        app.get("/nope"),
        app.client.put(app.url("/token")),
    ] {
        responses.push(request.header("origin", origin).send().await.unwrap());
    }
    responses
}

async fn preflight(app: &TestApp, origin: &str) -> Response {
    app.client
        .request(Method::OPTIONS, app.url("/token"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let app = spawn_app().await;

    for response in every_kind_of_answer(&app, ALLOWED).await {
        assert_eq!(cors_headers(&response), Vec::<String>::new());
        assert!(!vary(&response).contains(&"Origin".to_owned()));
    }
    let preflight = preflight(&app, ALLOWED).await;
    assert_eq!(preflight.status(), 405);
    assert_eq!(cors_headers(&preflight), Vec::<String>::new());
}

#[tokio::test]
async fn an_allowed_origin_gets_the_headers_on_every_answer() {
    let app = spawn_app_with_cors().await;

    for response in every_kind_of_answer(&app, ALLOWED).await {
        let what = format!("{} {}", response.status(), response.url());
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            ALLOWED,
            "{what}"
        );
        assert!(vary(&response).contains(&"Origin".to_owned()), "{what}");
    }
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_gets_204_and_the_headers() {
    let app = spawn_app_with_cors().await;

    let response = preflight(&app, "http://localhost:3000").await;

    assert_eq!(response.status(), 204);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(
        header("access-control-allow-origin"),
        "http://localhost:3000"
    );
    assert!(header("access-control-allow-methods").contains("POST"));
    for allowed in ["Authorization", "Content-Type", "DPoP"] {
        assert!(header("access-control-allow-headers").contains(allowed));
    }
    assert!(header("access-control-max-age").parse::<u32>().unwrap() > 0);
    assert!(vary(&response).contains(&"Origin".to_owned()));
}

#[tokio::test]
async fn other_origins_get_no_cors_headers() {
    let app = spawn_app_with_cors().await;

    for origin in [
        "https://evil.example.com",
        "https://app.example.com.evil.com",
        "https://APP.example.com",
        "null",
    ] {
        for response in every_kind_of_answer(&app, origin).await {
            assert_eq!(cors_headers(&response), Vec::<String>::new(), "{origin}");
        }
        let preflight = preflight(&app, origin).await;
        assert_eq!(preflight.status(), 405, "{origin}");
        assert_eq!(cors_headers(&preflight), Vec::<String>::new(), "{origin}");
    }
}
