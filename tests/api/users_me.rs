//! `GET /users/me`: what a bearer token gives, and every way it can fail.

use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde_json::{Value, json};

use crate::helpers::{spawn_app, status_and_json};

async fn me_with_header(app: &crate::helpers::TestApp, value: &str) -> reqwest::Response {
    app.get("/users/me")
        .header(
            AUTHORIZATION,
            HeaderValue::from_bytes(value.as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap()
}

async fn assert_not_authenticated(response: reqwest::Response) {
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"detail": "Not authenticated"}));
}

async fn assert_invalid_token(response: reqwest::Response) {
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"detail": "Invalid authentication credentials"})
    );
}

both_backends! {
    #[tokio::test]
    async fn a_live_token_of_an_active_user_shows_exactly_the_four_fields() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;

        let (status, body) = status_and_json(app.get_with_token("/users/me", &token).await).await;

        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({
                "username": "johndoe",
                "email": "johndoe@example.com",
                "full_name": "John Doe",
                "disabled": false,
            })
        );
        let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["username", "email", "full_name", "disabled"]);
    }

    #[tokio::test]
    async fn the_scheme_is_case_insensitive_and_spaces_before_the_token_are_skipped() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;

        for value in [
            format!("bearer {token}"),
            format!("BEARER   {token}"),
            format!("Bearer    {token}"),
        ] {
            let response = me_with_header(&app, &value).await;
            assert_eq!(response.status(), 200, "{value}");
        }
    }

    #[tokio::test]
    async fn no_authorization_header_is_not_authenticated() {
        let app = spawn_app().await;

        assert_not_authenticated(app.get("/users/me").send().await.unwrap()).await;
    }

    #[tokio::test]
    async fn another_scheme_is_not_authenticated() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;

        for value in [
            "Basic Og==".to_owned(),
            "Notexistent testtoken".to_owned(),
            format!("Token {token}"),
        ] {
            assert_not_authenticated(me_with_header(&app, &value).await).await;
        }
    }

    #[tokio::test]
    async fn a_token_in_the_query_string_is_not_accepted() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;

        for query in ["access_token", "token"] {
            let response = app
                .get(&format!("/users/me?{query}={token}"))
                .send()
                .await
                .unwrap();
            assert_not_authenticated(response).await;
        }
    }

    #[tokio::test]
    async fn unknown_malformed_or_empty_tokens_are_invalid() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;
        let unknown = "A".repeat(43);
        let tampered = format!(
            "{}{}",
            &token[..42],
            if token.ends_with('A') { 'B' } else { 'A' }
        );

        for value in [
            format!("Bearer {unknown}"),
            format!("Bearer {tampered}"),
            format!("Bearer {token}x"),
            "Bearer johndoe".to_owned(),
            "Bearer".to_owned(),
            "Bearer    ".to_owned(),
            "Bearer é".to_owned(),
        ] {
            assert_invalid_token(me_with_header(&app, &value).await).await;
        }
    }

    #[tokio::test]
    async fn a_disabled_users_token_gets_inactive_user() {
        let app = spawn_app().await;
        let token = app.token_for("alice", "secret2", "").await;

        let (status, body) = status_and_json(app.get_with_token("/users/me", &token).await).await;

        assert_eq!(status, 400);
        assert_eq!(body, json!({"detail": "Inactive user"}));
    }

    #[tokio::test]
    async fn other_methods_are_not_allowed() {
        let app = spawn_app().await;

        for path in ["/users/me", "/users/me/items", "/health"] {
            for method in ["POST", "PUT", "DELETE"] {
                app.assert_method_not_allowed(method, path, "GET").await;
            }
        }
    }
}

/// What a client can see of an answer: status, the headers it reads, and the body.
pub(crate) async fn seen(response: reqwest::Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = response.status().as_u16();
    let headers = ["content-type", "content-length", "x-content-type-options"]
        .iter()
        .map(|name| {
            let value = response.headers().get(*name).map(|v| v.to_str().unwrap());
            (name.to_string(), value.unwrap_or("<absent>").to_owned())
        })
        .collect();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

both_backends! {
    // A token the cache holds is answered before the router (the fast path); one it
    // does not goes through the OpenAPI handler. A client must not be able to tell.
    #[tokio::test]
    async fn an_answer_from_the_token_cache_is_the_same_as_one_from_the_database() {
        let app = spawn_app().await;
        app.cli(&["users", "add", "dora", "--password-stdin"])
            .write_stdin("map-and-backpack\n")
            .assert()
            .success();

        for (username, password, body) in [
            (
                "johndoe",
                "secret",
                r#"{"username":"johndoe","email":"johndoe@example.com","full_name":"John Doe","disabled":false}"#,
            ),
            (
                "dora",
                "map-and-backpack",
                r#"{"username":"dora","email":null,"full_name":null,"disabled":false}"#,
            ),
        ] {
            let token = app.token_for(username, password, "").await;
            let (from_cache, from_database) = app
                .answers_from_cache_and_database(|| async {
                    seen(app.get_with_token("/users/me", &token).await).await
                })
                .await;

            assert_eq!(from_cache, from_database);
            assert_eq!(from_cache.0, 200);
            assert_eq!(String::from_utf8(from_cache.2).unwrap(), body);
            assert_eq!(
                from_cache.1[0],
                ("content-type".into(), "application/json; charset=utf-8".into())
            );
            assert_eq!(from_cache.1[2], ("x-content-type-options".into(), "nosniff".into()));
        }
    }

    // Only a GET without a body is answered early: anything else gets what the router
    // gives it, even with a token the cache holds.
    #[tokio::test]
    async fn a_cached_token_does_not_change_the_answer_to_other_requests() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;
        assert_eq!(app.me_status(&token).await, 200);
        assert_eq!(app.me_status(&token).await, 200);

        let head = app
            .client
            .head(app.url("/users/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        assert!(head.bytes().await.unwrap().is_empty());
        let too_large = app
            .get("/users/me")
            .bearer_auth(&token)
            .body(vec![b'x'; 100_000])
            .send()
            .await
            .unwrap();
        assert_eq!(too_large.status(), 413);
        let (status, _) = status_and_json(
            app.get("/users/me/")
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404);
    }
}
