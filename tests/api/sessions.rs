//! Sessions (RFC 9700's token families) stay whole and bounded: one live refresh token per
//! session whatever the retries, a replay after a retry ends the session, no client can
//! grow the database by looping, and no access token outlives its session.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app, spawn_app_with, status_and_json};

/// Refreshes and returns the new access and refresh tokens; panics unless it succeeds.
async fn refreshed(app: &TestApp, refresh_token: &str) -> (String, String) {
    let (status, body) = status_and_json(app.refresh(refresh_token, None).await).await;
    assert_eq!(status, 200, "refresh failed: {body}");
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

both_backends! {
    #[tokio::test]
    async fn a_thief_replaying_within_the_grace_ends_the_session_at_the_owners_next_refresh() {
        let app = spawn_app_with(|s| s.refresh_token_reuse_grace = Duration::from_secs(1)).await;
        let (_, stolen) = app.tokens_for("johndoe", "secret", "").await;
        let (_, owners) = refreshed(&app, &stolen).await;

        // The thief replays the spent token within the grace: a retry, which retires the
        // owner's token instead of splitting the session in two.
        let (thiefs_access, thiefs_refresh) = refreshed(&app, &stolen).await;
        assert_eq!(app.me_status(&thiefs_access).await, 200);
        tokio::time::sleep(Duration::from_millis(1100)).await;

        let (status, body) = status_and_json(app.refresh(&owners, None).await).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        assert_eq!(app.me_status(&thiefs_access).await, 401, "the whole session ended");
        assert_eq!(app.refresh(&thiefs_refresh, None).await.status(), 400);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_retries_of_one_refresh_token_leave_one_live_refresh_token() {
        let app = spawn_app().await;
        let (_, refresh) = app.tokens_for("johndoe", "secret", "").await;

        let answers = join_all((0..50).map(|_| app.refresh(&refresh, None))).await;

        let mut issued = Vec::new();
        for answer in answers {
            let (status, body) = status_and_json(answer).await;
            assert_eq!(status, 200, "{body}");
            issued.push(body["refresh_token"].as_str().unwrap().to_owned());
        }
        let live = app
            .sql_i64("select count(*) from refresh_tokens where spent_at is null")
            .await;
        assert_eq!(live, 1, "a session has at most one live refresh token");
    }

    #[tokio::test]
    async fn a_thousand_refreshes_of_one_session_keep_at_most_64_rows() {
        let app = spawn_app().await;
        let (_, mut refresh) = app.tokens_for("johndoe", "secret", "").await;
        let first = refresh.clone();

        for _ in 0..1000 {
            refresh = refreshed(&app, &refresh).await.1;
        }

        let rows = app.sql_i64("select count(*) from refresh_tokens").await;
        assert!(rows <= 64, "{rows} refresh-token rows");
        // The first token's row is gone: presenting it is no theft, the session lives on.
        assert_eq!(app.refresh(&first, None).await.status(), 400);
        refreshed(&app, &refresh).await;
    }

    #[tokio::test]
    async fn a_login_beyond_the_cap_ends_the_least_recently_used_session() {
        let app = spawn_app_with(|s| s.max_sessions_per_user = 3).await;
        let mut sessions = Vec::new();
        for _ in 0..3 {
            sessions.push(app.tokens_for("johndoe", "secret", "").await);
        }
        // Using the oldest session makes the second one the least recently used.
        sessions[0] = refreshed(&app, &sessions[0].1).await;

        for _ in 0..3 {
            sessions.push(app.tokens_for("johndoe", "secret", "").await);
        }

        let live = app
            .sql_i64("select count(*) from sessions where revoked_at is null")
            .await;
        assert_eq!(live, 3);
        for (access, refresh) in &sessions[..3] {
            assert_eq!(app.me_status(access).await, 401, "an ended session's access token");
            assert_eq!(app.refresh(refresh, None).await.status(), 400);
        }
        for (access, _) in &sessions[3..] {
            assert_eq!(app.me_status(access).await, 200);
        }
        // Other users are not touched.
        assert_eq!(app.login("alice", "secret2").await.status(), 200);
    }

    #[tokio::test]
    async fn no_access_token_outlives_its_session() {
        let app = spawn_app_with(|s| s.refresh_token_ttl = Duration::from_secs(2)).await;

        let response = app.login("johndoe", "secret").await;
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["expires_in"], 2);
        let refresh = body["refresh_token"].as_str().unwrap();
        let (status, body) = status_and_json(app.refresh(refresh, None).await).await;
        assert_eq!(status, 200);
        assert!(body["expires_in"].as_u64().unwrap() <= 2, "{body}");
        let access = body["access_token"].as_str().unwrap();

        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(app.me_status(access).await, 401);
    }
}
