//! The form endpoints take `multipart/form-data` as FastAPI's forms do, with the same
//! rules and limit, and tell a client that sent JSON or text to send a form.

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, status_and_json};

const BOUNDARY: &str = "----simple-oauth2-test-boundary";

/// A `multipart/form-data` body as browsers and `curl -F` send it.
fn multipart(fields: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body
}

async fn post_multipart(app: &TestApp, path: &str, body: String) -> reqwest::Response {
    app.post(path)
        .header(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

both_backends! {
    #[tokio::test]
    async fn a_multipart_login_works_like_a_urlencoded_one() {
        let app = spawn_app().await;

        let response = post_multipart(
            &app,
            "/token",
            multipart(&[("username", "johndoe"), ("password", "secret"), ("scope", "me")]),
        )
        .await;

        assert_eq!(response.headers()["cache-control"], "no-store");
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scope"], "me");
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(app.me_status(token).await, 200);

        let revoked = post_multipart(&app, "/token/revoke", multipart(&[("token", token)])).await;
        assert_eq!(revoked.status(), 200);
        assert_eq!(app.me_status(token).await, 401);
    }
}

#[tokio::test]
async fn a_multipart_form_follows_the_same_rules() {
    let app = spawn_app().await;
    let field_errors = |body: &Value| body["detail"].clone();

    let (status, wrong) = status_and_json(
        post_multipart(
            &app,
            "/token",
            multipart(&[("username", "johndoe"), ("password", "wrong")]),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, wrong["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    let (status, missing) = status_and_json(
        post_multipart(&app, "/token", multipart(&[("username", "johndoe")])).await,
    )
    .await;
    assert_eq!(
        (status, missing["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(
        field_errors(&missing),
        json!([{"type": "missing", "loc": ["body", "password"], "msg": "Field required"}])
    );

    let (status, repeated) = status_and_json(
        post_multipart(
            &app,
            "/token",
            multipart(&[
                ("username", "johndoe"),
                ("username", "alice"),
                ("password", "secret"),
            ]),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, repeated["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(repeated["detail"][0]["loc"], json!(["body", "username"]));

    let malformed = app
        .post("/token")
        .header(CONTENT_TYPE, "multipart/form-data")
        .body("username=johndoe")
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(malformed).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    let huge = "x".repeat(20 * 1024);
    let too_large = post_multipart(
        &app,
        "/token",
        multipart(&[("username", "johndoe"), ("password", &huge)]),
    )
    .await;
    assert_eq!(too_large.status(), 413);
}

#[tokio::test]
async fn json_or_text_is_told_to_send_a_form_on_every_form_endpoint() {
    let app = spawn_app().await;

    for path in ["/token", "/token/revoke", "/token/introspect"] {
        for request in [
            app.post(path)
                .json(&json!({"username": "johndoe", "password": "secret", "token": "x"})),
            app.post(path)
                .header(CONTENT_TYPE, "text/plain")
                .body("username=johndoe&password=secret"),
        ] {
            let (status, body) = status_and_json(request.send().await.unwrap()).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["error"], "invalid_request", "{path}");
            let description = body["error_description"].as_str().unwrap();
            assert!(
                description.contains("application/x-www-form-urlencoded")
                    && description.contains("multipart/form-data"),
                "{path}: {description}"
            );
        }
    }
}

#[tokio::test]
async fn curl_dash_f_logs_in() {
    let app = spawn_app().await;
    let url = app.url("/token");
    // Off the runtime's thread, which serves the request.
    let curl = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "20",
                "-F",
                "username=johndoe",
                "-F",
                "password=secret",
            ])
            .arg(url)
            .output()
    });
    let Ok(output) = curl.await.unwrap() else {
        crate::helpers::say_skipped("curl -F login test", "curl is not installed");
        return;
    };

    let body: Value = serde_json::from_slice(&output.stdout).expect("a JSON answer");

    assert_eq!(body["token_type"], "bearer", "{body}");
}
