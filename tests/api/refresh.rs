//! Refresh tokens (RFC 6749 section 6, RFC 9700 section 4.14.2): rotation, reuse
//! detection with a grace window, lifetimes, scopes, revocation, and the CLI.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, status_and_json};

/// Refreshes and returns the new access and refresh tokens; panics unless it succeeds.
async fn refreshed(app: &TestApp, refresh_token: &str, scope: Option<&str>) -> (String, String) {
    let (status, body) = status_and_json(app.refresh(refresh_token, scope).await).await;
    assert_eq!(status, 200, "refresh failed: {body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Checks the contract's answer for a dead refresh token.
async fn assert_invalid_refresh_token(response: reqwest::Response) {
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["detail"], "Invalid refresh token");
    assert!(body["error_description"].is_string());
}

both_backends! {
    #[tokio::test]
    async fn a_login_also_returns_a_refresh_token() {
        let app = spawn_app().await;
        let (access, refresh) = app.tokens_for("johndoe", "secret", "").await;

        assert_eq!(refresh.len(), 43);
        assert!(refresh.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(refresh, access);
    }

    #[tokio::test]
    async fn a_refresh_rotates_both_tokens_and_answers_like_a_login() {
        let app = spawn_app().await;
        let (access, refresh) = app.tokens_for("johndoe", "secret", "me items").await;

        let response = app.refresh(&refresh, None).await;

        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["pragma"], "no-cache");
        let body: Value = response.json().await.unwrap();
        let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["access_token", "token_type", "expires_in", "refresh_token", "scope"]);
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 1800);
        assert_eq!(body["scope"], "me items");
        let new_access = body["access_token"].as_str().unwrap();
        let new_refresh = body["refresh_token"].as_str().unwrap();
        assert_ne!(new_access, access);
        assert_ne!(new_refresh, refresh);
        assert_eq!(app.me_status(new_access).await, 200);
        assert_eq!(app.me_status(&access).await, 200, "the old access token lives on");
    }

    #[tokio::test]
    async fn a_chain_of_refreshes_keeps_working() {
        let app = spawn_app().await;
        let (_, mut refresh) = app.tokens_for("johndoe", "secret", "").await;

        for _ in 0..5 {
            let (access, next) = refreshed(&app, &refresh, None).await;
            assert_eq!(app.me_status(&access).await, 200);
            refresh = next;
        }
    }

    #[tokio::test]
    async fn a_spent_token_replayed_after_the_grace_revokes_the_whole_session_only() {
        let app = spawn_app_with(|s| s.refresh_token_reuse_grace = Duration::from_millis(300)).await;
        let (first_access, stolen) = app.tokens_for("johndoe", "secret", "").await;
        let (other_access, other_refresh) = app.tokens_for("johndoe", "secret", "").await;
        let (newest_access, newest_refresh) = refreshed(&app, &stolen, None).await;
        tokio::time::sleep(Duration::from_millis(400)).await;

        assert_invalid_refresh_token(app.refresh(&stolen, None).await).await;

        assert_eq!(app.me_status(&newest_access).await, 401);
        assert_eq!(app.me_status(&first_access).await, 401);
        assert_invalid_refresh_token(app.refresh(&newest_refresh, None).await).await;
        assert_eq!(app.me_status(&other_access).await, 200, "another login is left alone");
        refreshed(&app, &other_refresh, None).await;
    }

    #[tokio::test]
    async fn a_spent_token_replayed_within_the_grace_is_a_retry() {
        let app = spawn_app().await;
        let (_, refresh) = app.tokens_for("johndoe", "secret", "").await;
        let (first_access, first_refresh) = refreshed(&app, &refresh, None).await;

        let (retry_access, retry_refresh) = refreshed(&app, &refresh, None).await;

        assert_ne!(retry_access, first_access);
        assert_eq!(app.me_status(&first_access).await, 200);
        assert_eq!(app.me_status(&retry_access).await, 200);
        // Both answers' refresh tokens belong to the session and work.
        refreshed(&app, &first_refresh, None).await;
        refreshed(&app, &retry_refresh, None).await;
    }

    #[tokio::test]
    async fn with_no_grace_any_replay_revokes_the_session() {
        let app = spawn_app_with(|s| s.refresh_token_reuse_grace = Duration::ZERO).await;
        let (_, refresh) = app.tokens_for("johndoe", "secret", "").await;
        let (access, _) = refreshed(&app, &refresh, None).await;

        assert_invalid_refresh_token(app.refresh(&refresh, None).await).await;
        assert_eq!(app.me_status(&access).await, 401);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn eight_concurrent_refreshes_with_one_token_all_succeed() {
        let app = spawn_app().await;
        let (_, refresh) = app.tokens_for("johndoe", "secret", "").await;

        let answers = join_all((0..8).map(|_| app.refresh(&refresh, None))).await;

        let mut access_tokens = Vec::new();
        for response in answers {
            let (status, body) = status_and_json(response).await;
            assert_eq!(status, 200, "{body}");
            access_tokens.push(body["access_token"].as_str().unwrap().to_owned());
        }
        for token in &access_tokens {
            assert_eq!(app.me_status(token).await, 200);
        }
        access_tokens.sort();
        access_tokens.dedup();
        assert_eq!(access_tokens.len(), 8, "every answer has its own access token");
    }

    /// On SQLite, rotations that arrive together are committed together: each session's
    /// still goes its own way, an ended one among them included.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_refreshes_of_many_sessions_each_rotate_their_own() {
        let app = spawn_app().await;
        let mut sessions = Vec::new();
        for _ in 0..12 {
            sessions.push(app.tokens_for("johndoe", "secret", "").await);
        }
        let (ended_access, ended_refresh) = sessions.pop().unwrap();
        assert_eq!(app.revoke(&ended_refresh).await.status(), 200);

        let refreshes = sessions
            .iter()
            .map(|(_, refresh)| refresh.as_str())
            .chain([ended_refresh.as_str()])
            .map(|refresh| app.refresh(refresh, None));
        let mut answers = join_all(refreshes).await;

        assert_invalid_refresh_token(answers.pop().unwrap()).await;
        assert_eq!(app.me_status(&ended_access).await, 401);
        let mut issued = Vec::new();
        for response in answers {
            let (status, body) = status_and_json(response).await;
            assert_eq!(status, 200, "{body}");
            issued.push((
                body["access_token"].as_str().unwrap().to_owned(),
                body["refresh_token"].as_str().unwrap().to_owned(),
            ));
        }
        let mut distinct: Vec<&str> = issued.iter().map(|(access, _)| access.as_str()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), sessions.len(), "every answer has its own access token");
        // Each new pair works, and each rotation spent its own session's token: the next
        // refresh of every session goes on from the new one.
        for ((old_access, _), (access, refresh)) in sessions.iter().zip(&issued) {
            assert_eq!(app.me_status(access).await, 200);
            assert_eq!(app.me_status(old_access).await, 200, "refresh ends no access token");
            refreshed(&app, refresh, None).await;
        }
    }

    #[tokio::test]
    async fn an_unused_refresh_token_dies_after_the_idle_lifetime() {
        let app = spawn_app_with(|s| s.refresh_token_idle_ttl = Duration::from_secs(2)).await;
        let (_, idle) = app.tokens_for("johndoe", "secret", "").await;
        let (_, fresh) = app.tokens_for("johndoe", "secret", "").await;

        // Used halfway through its idle lifetime, then idle again for a bit more than
        // half: alive, while the token never used is past its lifetime.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let (_, fresh) = refreshed(&app, &fresh, None).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;

        assert_invalid_refresh_token(app.refresh(&idle, None).await).await;
        refreshed(&app, &fresh, None).await;
    }

    #[tokio::test]
    async fn a_session_ends_at_its_absolute_lifetime_however_often_it_is_refreshed() {
        let app = spawn_app_with(|s| s.refresh_token_ttl = Duration::from_millis(1500)).await;
        let (_, mut refresh) = app.tokens_for("johndoe", "secret", "").await;

        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            refresh = refreshed(&app, &refresh, None).await.1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;

        assert_invalid_refresh_token(app.refresh(&refresh, None).await).await;
    }

    #[tokio::test]
    async fn scope_can_be_narrowed_and_omitting_it_restores_the_sessions_scopes() {
        let app = spawn_app().await;
        let (_, refresh) = app.tokens_for("johndoe", "secret", "me items").await;

        let (status, body) = status_and_json(app.refresh(&refresh, Some("me")).await).await;
        assert_eq!(status, 200);
        assert_eq!(body["scope"], "me");
        let narrow = body["access_token"].as_str().unwrap();
        assert_eq!(app.get_with_token("/users/me/items", narrow).await.status(), 403);

        let (status, body) =
            status_and_json(app.refresh(body["refresh_token"].as_str().unwrap(), None).await).await;
        assert_eq!(status, 200);
        assert_eq!(body["scope"], "me items");
        let wide = body["access_token"].as_str().unwrap();
        assert_eq!(app.get_with_token("/users/me/items", wide).await.status(), 200);
    }

    #[tokio::test]
    async fn a_wider_or_unknown_scope_is_refused_and_spends_nothing() {
        let app = spawn_app().await;
        let (_, refresh) = app.tokens_for("johndoe", "secret", "me").await;

        for scope in ["me items", "admin"] {
            let (status, body) = status_and_json(app.refresh(&refresh, Some(scope)).await).await;
            assert_eq!((status, &body["error"]), (400, &json!("invalid_scope")), "{scope}");
        }
        let (_, next) = refreshed(&app, &refresh, None).await;
        let (status, body) = status_and_json(app.refresh(&next, None).await).await;
        assert_eq!(status, 200);
        assert_eq!(body["scope"], "me");
    }

    #[tokio::test]
    async fn a_disabled_user_cannot_refresh_and_nothing_is_spent() {
        let app = spawn_app().await;
        let (_, refresh) = app.tokens_for("johndoe", "secret", "").await;
        app.cli(&["users", "disable", "johndoe"]).assert().success();

        let (status, body) = status_and_json(app.refresh(&refresh, None).await).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
        assert_eq!(body["detail"], "Inactive user");

        app.cli(&["users", "enable", "johndoe"]).assert().success();
        refreshed(&app, &refresh, None).await;
    }

    #[tokio::test]
    async fn a_changed_password_or_a_deleted_user_ends_refreshing() {
        let app = spawn_app().await;
        let (_, johns) = app.tokens_for("johndoe", "secret", "").await;
        app.cli(&["users", "add", "bob", "--password-stdin"])
            .write_stdin("builder\n")
            .assert()
            .success();
        let (_, bobs) = app.tokens_for("bob", "builder", "").await;

        app.cli(&["users", "set-password", "johndoe", "--password-stdin"])
            .write_stdin("a new secret\n")
            .assert()
            .success();
        app.cli(&["users", "delete", "bob"]).assert().success();

        assert_invalid_refresh_token(app.refresh(&johns, None).await).await;
        let (status, body) = status_and_json(app.refresh(&bobs, None).await).await;
        assert_eq!((status, &body["error"]), (400, &json!("invalid_grant")));
    }

    #[tokio::test]
    async fn a_refresh_token_is_not_a_bearer_token_nor_an_access_token_a_refresh_token() {
        let app = spawn_app().await;
        let (access, refresh) = app.tokens_for("johndoe", "secret", "").await;

        let response = app.get_with_token("/users/me", &refresh).await;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
        assert_invalid_refresh_token(app.refresh(&access, None).await).await;
        assert_invalid_refresh_token(app.refresh("not-a-token", None).await).await;
    }

    #[tokio::test]
    async fn revoking_a_refresh_token_ends_its_session_access_tokens_included() {
        let app = spawn_app().await;
        let (first_access, refresh) = app.tokens_for("johndoe", "secret", "").await;
        let (access, next) = refreshed(&app, &refresh, None).await;
        assert_eq!(app.me_status(&access).await, 200);

        // The hint is only a hint: a wrong one still works.
        let response = app
            .post("/token/revoke")
            .form(&[("token", next.as_str()), ("token_type_hint", "access_token")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);

        assert_eq!(app.me_status(&access).await, 401);
        assert_eq!(app.me_status(&first_access).await, 401);
        assert_invalid_refresh_token(app.refresh(&next, None).await).await;
    }

    #[tokio::test]
    async fn revoking_an_access_token_ends_only_that_token() {
        let app = spawn_app().await;
        let (access, refresh) = app.tokens_for("johndoe", "secret", "").await;
        let (second_access, _) = refreshed(&app, &refresh, None).await;

        assert_eq!(app.revoke(&access).await.status(), 200);

        assert_eq!(app.me_status(&access).await, 401);
        assert_eq!(app.me_status(&second_access).await, 200);
    }

    #[tokio::test]
    async fn a_missing_refresh_token_is_an_invalid_request() {
        let app = spawn_app().await;

        let (status, body) =
            status_and_json(app.post_token(&[("grant_type", "refresh_token")]).await).await;

        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_request");
        assert_eq!(
            body["detail"],
            json!([{"type": "missing", "loc": ["body", "refresh_token"], "msg": "Field required"}])
        );
    }

    #[tokio::test]
    async fn a_zero_lifetime_turns_refresh_tokens_off() {
        let app = spawn_app_with(|s| s.refresh_token_ttl = Duration::ZERO).await;

        let (status, body) = status_and_json(app.login("johndoe", "secret").await).await;
        assert_eq!(status, 200);
        assert!(body.get("refresh_token").is_none(), "{body}");
        let (status, body) = status_and_json(
            app.post_token(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
                .await,
        )
        .await;
        assert_eq!((status, &body["error"]), (400, &json!("unsupported_grant_type")));
    }

    #[tokio::test]
    async fn users_sessions_lists_live_sessions_without_tokens_and_logout_ends_them() {
        let app = spawn_app().await;
        let (access, refresh) = app.tokens_for("johndoe", "secret", "me items").await;
        app.tokens_for("johndoe", "secret", "me").await;
        app.tokens_for("alice", "secret2", "").await;

        let listed = app.cli(&["users", "sessions", "johndoe"]).assert().success();
        let listed = String::from_utf8(listed.get_output().stdout.clone()).unwrap();
        let lines: Vec<_> = listed.lines().collect();
        assert_eq!(lines.len(), 3, "a header and two sessions:\n{listed}");
        assert!(lines[0].starts_with("STARTED"));
        assert!(lines.iter().any(|l| l.contains("me items")));
        assert!(!listed.contains(&access) && !listed.contains(&refresh));

        app.cli(&["users", "logout", "johndoe"]).assert().success();

        let status = app.status_after_outside_change("/users/me", &access, 401).await;
        assert_eq!(status, 401);
        assert_invalid_refresh_token(app.refresh(&refresh, None).await).await;
        let listed = app.cli(&["users", "sessions", "johndoe"]).assert().success();
        assert_eq!(String::from_utf8_lossy(&listed.get_output().stdout).lines().count(), 1);
    }

    #[tokio::test]
    async fn sessions_and_logout_of_an_unknown_user_fail_with_one_line() {
        let app = spawn_app().await;

        for command in ["sessions", "logout"] {
            let failed = app.cli(&["users", command, "nobody"]).assert().failure().code(1);
            let stderr = String::from_utf8(failed.get_output().stderr.clone()).unwrap();
            assert_eq!(stderr.lines().count(), 1, "{command}: {stderr}");
            assert!(stderr.contains("nobody"));
        }
    }
}
