//! Token lifecycle: expiry, revocation, housekeeping, password-hash upgrades.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, status_and_json};

async fn token_rows(app: &TestApp) -> i64 {
    app.sql_i64("select count(*) from access_tokens").await
}

both_backends! {
    #[tokio::test]
    async fn a_token_stops_working_after_its_ttl() {
        let app = spawn_app_with(|s| s.access_token_ttl = Duration::from_secs(2)).await;
        let token = app.token_for("johndoe", "secret", "").await;
        assert_eq!(app.get_with_token("/users/me", &token).await.status(), 200);

        tokio::time::sleep(Duration::from_millis(2100)).await;

        let (status, body) = status_and_json(app.get_with_token("/users/me", &token).await).await;
        assert_eq!(status, 401);
        assert_eq!(
            body,
            json!({"detail": "Invalid authentication credentials"})
        );
    }

    #[tokio::test]
    async fn a_revoked_token_is_dead_on_every_route() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "me items").await;
        assert_eq!(app.get_with_token("/users/me", &token).await.status(), 200);

        let (status, body) = status_and_json(app.revoke(&token).await).await;
        assert_eq!(status, 200);
        assert_eq!(body, json!({}));

        for path in ["/users/me", "/users/me/items"] {
            let response = app.get_with_token(path, &token).await;
            assert_eq!(response.status(), 401, "{path}");
            assert_eq!(
                response.headers()["www-authenticate"],
                r#"Bearer error="invalid_token""#
            );
        }
    }

    #[tokio::test]
    async fn revoking_unknown_malformed_or_revoked_tokens_is_fine() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;
        app.revoke(&token).await;

        for token in [token.as_str(), &"A".repeat(43), "not a token"] {
            let (status, body) = status_and_json(app.revoke(token).await).await;
            assert_eq!(status, 200, "{token}");
            assert_eq!(body, json!({}));
        }
    }

    #[tokio::test]
    async fn revoking_one_token_leaves_the_others_working() {
        let app = spawn_app().await;
        let first = app.token_for("johndoe", "secret", "").await;
        let second = app.token_for("johndoe", "secret", "").await;

        app.revoke(&first).await;

        assert_eq!(app.get_with_token("/users/me", &first).await.status(), 401);
        assert_eq!(app.get_with_token("/users/me", &second).await.status(), 200);
    }

    #[tokio::test]
    async fn revoking_without_a_token_is_an_invalid_request() {
        let app = spawn_app().await;

        let response = app
            .post("/token/revoke")
            .form(&[("token_type_hint", "access_token")])
            .send()
            .await
            .unwrap();

        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(
            body["detail"],
            json!([{"type": "missing", "loc": ["body", "token"], "msg": "Field required"}])
        );
    }

    #[tokio::test]
    async fn a_sweep_deletes_expired_and_revoked_tokens_only() {
        let app = spawn_app_with(|s| s.access_token_ttl = Duration::from_secs(2)).await;
        for _ in 0..5 {
            app.token_for("johndoe", "secret", "").await;
        }
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let kept = app.token_for("johndoe", "secret", "").await;
        let revoked = app.token_for("johndoe", "secret", "").await;
        app.revoke(&revoked).await;

        app.auth.sweep().await.unwrap();

        assert_eq!(token_rows(&app).await, 1);
        assert_eq!(app.get_with_token("/users/me", &kept).await.status(), 200);
    }

    #[tokio::test]
    async fn housekeeping_keeps_the_token_table_bounded() {
        let app = spawn_app_with(|s| s.access_token_ttl = Duration::from_secs(1)).await;
        for _ in 0..20 {
            app.token_for("johndoe", "secret", "").await;
        }

        // The background sweep runs every second with this TTL; give it a few chances.
        let mut rows = token_rows(&app).await;
        for _ in 0..40 {
            if rows == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            rows = token_rows(&app).await;
        }
        assert_eq!(rows, 0);
    }

    #[tokio::test]
    async fn a_weak_password_hash_is_upgraded_on_login() {
        use argon2::{Algorithm, Argon2, Params, Version, password_hash::PasswordHasher};
        let app = spawn_app().await;
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 1, 1, None).unwrap(),
        )
        .hash_password(b"secret")
        .unwrap()
        .to_string();
        app.sql_execute(
            "update users set hashed_password = $1 where username = 'johndoe'",
            &[&weak],
        )
        .await;

        assert_eq!(app.login("johndoe", "secret").await.status(), 200);

        let stored = app
            .sql_strings("select hashed_password from users where username = 'johndoe'")
            .await
            .remove(0);
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert_eq!(app.login("johndoe", "secret").await.status(), 200);
        assert_eq!(app.login("johndoe", "wrong").await.status(), 400);
    }
}
