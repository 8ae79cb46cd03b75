//! Scopes: declared, allowed per user, granted per token, required per route.

use reqwest::header::WWW_AUTHENTICATE;
use serde_json::json;

use crate::helpers::{spawn_app, status_and_json};

both_backends! {
    #[tokio::test]
    async fn requested_scopes_the_user_has_are_granted_and_returned() {
        let app = spawn_app().await;

        let (status, body) =
            status_and_json(app.login_with_scope("johndoe", "secret", "items me").await).await;

        assert_eq!(status, 200);
        assert_eq!(body["scope"], "me items");
    }

    #[tokio::test]
    async fn scopes_the_user_lacks_are_left_out() {
        let app = spawn_app().await;

        let (status, body) =
            status_and_json(app.login_with_scope("alice", "secret2", "me items").await).await;

        assert_eq!(status, 200);
        assert_eq!(body["scope"], "me");
    }

    #[tokio::test]
    async fn an_unknown_scope_is_invalid_scope() {
        let app = spawn_app().await;

        let (status, body) =
            status_and_json(app.login_with_scope("johndoe", "secret", "me admin").await).await;

        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_scope");
        assert!(body["detail"].is_string());
    }

    #[tokio::test]
    async fn items_need_the_items_scope() {
        let app = spawn_app().await;
        let with_items = app.token_for("johndoe", "secret", "me items").await;
        let without = app.token_for("johndoe", "secret", "me").await;

        let (status, body) =
            status_and_json(app.get_with_token("/users/me/items", &with_items).await).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!([{"item_id": "Foo", "owner": "johndoe"}]));

        let response = app.get_with_token("/users/me/items", &without).await;
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            r#"Bearer error="insufficient_scope", scope="items""#
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body, json!({"detail": "Not enough permissions"}));
    }

    #[tokio::test]
    async fn users_me_needs_no_scope() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;

        let response = app.get_with_token("/users/me", &token).await;

        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn items_without_a_token_are_not_authenticated() {
        let app = spawn_app().await;

        let (status, body) = status_and_json(app.get("/users/me/items").send().await.unwrap()).await;

        assert_eq!(status, 401);
        assert_eq!(body, json!({"detail": "Not authenticated"}));
    }

    #[tokio::test]
    async fn a_scope_taken_from_the_user_stops_working_on_their_tokens() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "me items").await;
        let response = app.get_with_token("/users/me/items", &token).await;
        assert_eq!(response.status(), 200);

        app.sql_execute(
            "update users set scopes = 'me' where username = 'johndoe'",
            &[],
        )
        .await;

        let status = app
            .status_after_outside_change("/users/me/items", &token, 403)
            .await;
        assert_eq!(status, 403);
    }
}
