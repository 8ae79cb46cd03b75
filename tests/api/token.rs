//! `POST /token`: the password grant, row by row of the contract.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with, status_and_json};

/// Status, headers but `date`, and body: what a client could compare.
async fn observable(response: reqwest::Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn missing(fields: &[&str]) -> Value {
    fields
        .iter()
        .map(|f| json!({"type": "missing", "loc": ["body", f], "msg": "Field required"}))
        .collect()
}

both_backends! {
    #[tokio::test]
    async fn right_credentials_give_an_uncached_bearer_token() {
        let app = spawn_app().await;

        let response = app.login("johndoe", "secret").await;

        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["pragma"], "no-cache");
        let body: Value = response.json().await.unwrap();
        let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["access_token", "token_type", "expires_in", "refresh_token"]
        );
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 1800);
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(token.len(), 43);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[tokio::test]
    async fn swagger_ui_authorize_request_logs_in() {
        let app = spawn_app().await;

        let response = app
            .post("/token")
            .header(AUTHORIZATION, "Basic Og==")
            .form(&[
                ("grant_type", "password"),
                ("username", "johndoe"),
                ("password", "secret"),
                ("scope", ""),
                ("client_id", ""),
                ("client_secret", ""),
            ])
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn grant_type_may_be_left_out() {
        let app = spawn_app().await;

        let response = app
            .post_token(&[("username", "johndoe"), ("password", "secret")])
            .await;

        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn a_disabled_user_with_the_right_password_still_gets_a_token() {
        let app = spawn_app().await;

        let response = app.login("alice", "secret2").await;

        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn each_login_gets_a_new_token() {
        let app = spawn_app().await;

        let first = app.token_for("johndoe", "secret", "").await;
        let second = app.token_for("johndoe", "secret", "").await;

        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn expires_in_follows_the_access_token_ttl_setting() {
        let app = spawn_app_with(|s| s.access_token_ttl = std::time::Duration::from_secs(3600)).await;

        let (status, body) = status_and_json(app.login("johndoe", "secret").await).await;

        assert_eq!(status, 200);
        assert_eq!(body["expires_in"], 3600);
    }

    #[tokio::test]
    async fn a_wrong_password_is_invalid_grant() {
        let app = spawn_app().await;

        let (status, body) = status_and_json(app.login("johndoe", "wrong").await).await;

        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({
                "detail": "Incorrect username or password",
                "error": "invalid_grant",
                "error_description": "Incorrect username or password",
            })
        );
    }

    #[tokio::test]
    async fn every_kind_of_bad_credentials_gets_the_same_bytes() {
        let app = spawn_app().await;
        let reference = observable(app.login("johndoe", "wrong").await).await;
        let long_username = "j".repeat(129);
        let long_password = "p".repeat(1025);

        for (username, password) in [
            ("nobody", "secret"),
            ("JohnDoe", "secret"),
            ("johndoe ", "secret"),
            ("alice", "wrong"),
            (long_username.as_str(), "secret"),
            ("johndoe", long_password.as_str()),
        ] {
            let got = observable(app.login(username, password).await).await;
            assert_eq!(got, reference, "for {username:?}");
        }
    }

    #[tokio::test]
    async fn another_grant_type_is_unsupported() {
        let app = spawn_app().await;

        let (status, body) = status_and_json(
            app.post_token(&[
                ("grant_type", "client_credentials"),
                ("username", "johndoe"),
                ("password", "secret"),
            ])
            .await,
        )
        .await;

        assert_eq!(status, 400);
        assert_eq!(body["error"], "unsupported_grant_type");
        assert!(body["detail"].is_string());
    }

    #[tokio::test]
    async fn missing_or_empty_credentials_are_listed_like_fastapi() {
        let app = spawn_app().await;
        type Form<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Form, &[&str]); 4] = [
            (&[], &["username", "password"]),
            (&[("username", "johndoe")], &["password"]),
            (&[("password", "secret")], &["username"]),
            (
                &[("username", ""), ("password", "")],
                &["username", "password"],
            ),
        ];

        for (form, fields) in cases {
            let (status, body) = status_and_json(app.post_token(form).await).await;
            assert_eq!(status, 400, "for {form:?}");
            assert_eq!(body["error"], "invalid_request");
            assert_eq!(body["detail"], missing(fields), "for {form:?}");
            assert!(body["error_description"].as_str().unwrap().is_ascii());
        }
    }

    #[tokio::test]
    async fn json_text_and_empty_bodies_are_invalid_requests() {
        let app = spawn_app().await;
        let requests = [
            app.post("/token")
                .json(&json!({"username": "johndoe", "password": "secret"})),
            app.post("/token")
                .header(CONTENT_TYPE, "text/plain")
                .body("username=johndoe&password=secret"),
            app.post("/token"),
        ];

        for (index, request) in requests.into_iter().enumerate() {
            let (status, body) = status_and_json(request.send().await.unwrap()).await;
            assert_eq!(status, 400);
            assert_eq!(body["error"], "invalid_request");
            if index < 2 {
                let description = body["error_description"].as_str().unwrap();
                assert!(description.contains("must be sent as a form"), "{body}");
            } else {
                assert_eq!(body["detail"], missing(&["username", "password"]));
            }
        }
    }

    #[tokio::test]
    async fn a_repeated_parameter_is_an_invalid_request() {
        let app = spawn_app().await;

        let (status, body) = status_and_json(
            app.post_token(&[
                ("username", "johndoe"),
                ("username", "alice"),
                ("password", "secret"),
            ])
            .await,
        )
        .await;

        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(body["detail"][0]["loc"], json!(["body", "username"]));
    }

    #[tokio::test]
    async fn other_methods_are_not_allowed() {
        let app = spawn_app().await;

        for method in ["GET", "PUT", "DELETE", "PATCH"] {
            app.assert_method_not_allowed(method, "/token", "POST")
                .await;
        }
        for method in ["GET", "PUT"] {
            app.assert_method_not_allowed(method, "/token/revoke", "POST")
                .await;
            app.assert_method_not_allowed(method, "/token/introspect", "POST")
                .await;
        }
    }
}
