//! Login under attack: throttling, bounded input, no hashing of what cannot be right.

use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

async fn fail_logins(app: &TestApp, username: &str, times: usize) {
    for _ in 0..times {
        assert_eq!(app.login(username, "wrong").await.status(), 400);
    }
}

/// Checks a 429 and returns its Retry-After, in seconds.
async fn assert_throttled(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].is_string());
    assert!(body["error"].is_string());
    retry_after
}

both_backends! {
    #[tokio::test]
    async fn the_eleventh_failure_for_a_user_is_throttled_until_the_window_ends() {
        // Long enough for ten argon2 checks on a busy machine, short enough to wait out.
        let app = spawn_app_with(|s| s.login_failure_window = Duration::from_secs(8)).await;
        fail_logins(&app, "johndoe", 10).await;

        assert_throttled(app.login("johndoe", "wrong").await).await;
        let retry_after = assert_throttled(app.login("johndoe", "secret").await).await;
        assert_eq!(app.login("alice", "secret2").await.status(), 200);

        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        assert_eq!(app.login("johndoe", "secret").await.status(), 200);
    }

    #[tokio::test]
    async fn unknown_and_known_users_are_throttled_alike() {
        let app = spawn_app().await;
        fail_logins(&app, "johndoe", 10).await;
        fail_logins(&app, "nobody", 10).await;

        let known = app.login("johndoe", "wrong").await;
        let unknown = app.login("nobody", "wrong").await;

        assert_eq!(known.status(), 429);
        assert_eq!(unknown.status(), 429);
        assert_eq!(known.bytes().await.unwrap(), unknown.bytes().await.unwrap());
    }

    #[tokio::test]
    async fn a_successful_login_clears_the_users_failures() {
        let app = spawn_app().await;
        fail_logins(&app, "johndoe", 9).await;
        assert_eq!(app.login("johndoe", "secret").await.status(), 200);

        fail_logins(&app, "johndoe", 9).await;

        assert_eq!(app.login("johndoe", "secret").await.status(), 200);
    }

    #[tokio::test]
    async fn the_per_address_limit_spans_usernames() {
        let app = spawn_app_with(|s| {
            s.login_max_failures = 0;
            s.login_max_failures_per_address = 3;
        })
        .await;
        for username in ["a", "b", "c"] {
            fail_logins(&app, username, 1).await;
        }

        assert_throttled(app.login("johndoe", "secret").await).await;
    }

    #[tokio::test]
    async fn zero_turns_the_limits_off() {
        let app = spawn_app_with(|s| {
            s.login_max_failures = 0;
            s.login_max_failures_per_address = 0;
        })
        .await;
        fail_logins(&app, "johndoe", 15).await;

        assert_eq!(app.login("johndoe", "secret").await.status(), 200);
    }

    #[tokio::test]
    async fn over_long_credentials_are_refused_without_hashing() {
        let app = spawn_app().await;
        let before = app.auth.password_hash_jobs();

        let long_password = "p".repeat(1025);
        assert_eq!(app.login("johndoe", &long_password).await.status(), 400);
        assert_eq!(app.login(&"u".repeat(129), "secret").await.status(), 400);
        assert_eq!(app.auth.password_hash_jobs(), before);

        assert_eq!(app.login("johndoe", &"p".repeat(1024)).await.status(), 400);
        assert_eq!(app.auth.password_hash_jobs(), before + 1);
    }

    #[tokio::test]
    async fn a_large_body_gets_413_sized_or_chunked() {
        let app = spawn_app().await;
        let password = "p".repeat(1024 * 1024);
        let body = format!("username=johndoe&password={password}");

        let sized = app
            .post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(sized.status(), 413);
        let json: Value = sized.json().await.unwrap();
        assert!(json["detail"].is_string());

        let stream = futures_util::stream::iter(
            body.into_bytes()
                .chunks(16 * 1024)
                .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                .collect::<Vec<_>>(),
        );
        let chunked = app
            .post("/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(chunked.status(), 413);
        assert_eq!(app.auth.password_hash_jobs(), 0);
    }

    #[tokio::test]
    async fn an_oversized_header_gets_a_client_error() {
        let app = spawn_app().await;
        let address = app.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = format!(
            "GET /users/me HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1024 * 1024)
        );

        // The server may answer and close before reading it all.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut response = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;

        let status_line = String::from_utf8_lossy(&response);
        assert!(
            status_line.starts_with("HTTP/1.1 4"),
            "got {:?}",
            status_line.lines().next()
        );
    }
}
