//! Trusted devices (OWASP "device cookies"): a client that logged in as a user before is
//! not locked out by strangers' wrong passwords, counts its own failures, and anything but
//! a valid cookie of that user is no cookie at all.

use reqwest::Response;

use crate::helpers::{TestApp, spawn_app_with, status_and_json};

/// A login with `password`, carrying `cookie` as the `device` cookie when given.
async fn login_from(
    app: &TestApp,
    cookie: Option<&str>,
    username: &str,
    password: &str,
) -> Response {
    let mut request = app
        .post("/token")
        .form(&[("username", username), ("password", password)]);
    if let Some(cookie) = cookie {
        request = request.header("cookie", format!("theme=dark; device={cookie}"));
    }
    request.send().await.expect("request sent")
}

/// The `device` cookie a response sets.
fn device_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|value| value.strip_prefix("device="))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
}

/// Logs in with the right password and returns the device cookie it earned.
async fn trusted_cookie(app: &TestApp, username: &str, password: &str) -> String {
    let response = login_from(app, None, username, password).await;
    assert_eq!(response.status(), 200);
    device_cookie(&response).expect("a device cookie")
}

/// Wrong passwords from a stranger until the username is locked.
async fn lock_out(app: &TestApp, username: &str) {
    for _ in 0..3 {
        assert_eq!(login_from(app, None, username, "wrong").await.status(), 400);
    }
    assert_eq!(login_from(app, None, username, "wrong").await.status(), 429);
}

async fn spawn_app_with_limit_3() -> TestApp {
    spawn_app_with(|s| s.login_max_failures = 3).await
}

both_backends! {
    #[tokio::test]
    async fn a_login_sets_a_private_device_cookie_for_the_token_endpoint() {
        let app = spawn_app_with_limit_3().await;

        let response = login_from(&app, None, "johndoe", "secret").await;

        let set_cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
        let cookie = device_cookie(&response).unwrap();
        assert_eq!(cookie.len(), 43, "32 random bytes: {set_cookie}");
        for attribute in ["Path=/token", "HttpOnly", "SameSite=Strict", "Max-Age=31536000"] {
            assert!(set_cookie.contains(attribute), "{attribute} in {set_cookie}");
        }
        assert!(!set_cookie.contains("Secure"), "an http issuer: {set_cookie}");
        let stored = app.sql_i64("select count(*) from devices").await;
        assert_eq!(stored, 1);
        // A refresh neither sets nor needs one.
        let body: serde_json::Value = response.json().await.unwrap();
        let refreshed = app.refresh(body["refresh_token"].as_str().unwrap(), None).await;
        assert_eq!(refreshed.status(), 200);
        assert!(refreshed.headers().get("set-cookie").is_none());
    }

    #[tokio::test]
    async fn a_trusted_device_logs_in_while_strangers_are_locked_out() {
        let app = spawn_app_with_limit_3().await;
        let cookie = trusted_cookie(&app, "johndoe", "secret").await;

        lock_out(&app, "johndoe").await;

        let trusted = login_from(&app, Some(&cookie), "johndoe", "secret").await;
        assert_eq!(trusted.status(), 200);
        assert_eq!(device_cookie(&trusted).as_deref(), Some(cookie.as_str()), "kept");
        // Its success does not lift the lock for the others.
        assert_eq!(login_from(&app, None, "johndoe", "secret").await.status(), 429);
    }

    #[tokio::test]
    async fn a_trusted_devices_own_failures_end_its_trust() {
        let app = spawn_app_with_limit_3().await;
        let cookie = trusted_cookie(&app, "johndoe", "secret").await;
        lock_out(&app, "johndoe").await;

        for _ in 0..3 {
            let (status, body) =
                status_and_json(login_from(&app, Some(&cookie), "johndoe", "wrong").await).await;
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        }

        let response = login_from(&app, Some(&cookie), "johndoe", "secret").await;
        assert_eq!(response.status(), 429, "untrusted like anyone else");
    }

    #[tokio::test]
    async fn forged_tampered_and_other_users_cookies_are_no_cookie() {
        let app = spawn_app_with_limit_3().await;
        let johns = trusted_cookie(&app, "johndoe", "secret").await;
        let alices = trusted_cookie(&app, "alice", "secret2").await;
        lock_out(&app, "johndoe").await;
        let mut tampered = johns.clone().into_bytes();
        tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        let forged = "f".repeat(43);

        let none = login_from(&app, None, "johndoe", "secret").await;
        assert_eq!(none.status(), 429);
        let none = none.text().await.unwrap();
        for (case, cookie) in [("another user's", alices.as_str()), ("tampered", &tampered), ("forged", &forged), ("malformed", "x")] {
            let response = login_from(&app, Some(cookie), "johndoe", "secret").await;
            assert_eq!(response.status(), 429, "{case}");
            assert!(response.headers().get("set-cookie").is_none(), "{case}");
            assert_eq!(response.text().await.unwrap(), none, "{case}: the same bytes");
        }
    }

    #[tokio::test]
    async fn a_password_change_and_a_logout_forget_the_users_devices() {
        let app = spawn_app_with_limit_3().await;
        let before_change = trusted_cookie(&app, "johndoe", "secret").await;
        app.cli(&["users", "set-password", "johndoe", "--password-stdin"])
            .write_stdin("newsecret\n")
            .assert()
            .success();
        let before_logout = trusted_cookie(&app, "johndoe", "newsecret").await;
        app.cli(&["users", "logout", "johndoe"]).assert().success();
        lock_out(&app, "johndoe").await;

        for cookie in [&before_change, &before_logout] {
            let response = login_from(&app, Some(cookie), "johndoe", "newsecret").await;
            assert_eq!(response.status(), 429);
        }
        assert_eq!(app.sql_i64("select count(*) from devices").await, 0);
    }

    #[tokio::test]
    async fn with_device_cookies_off_no_cookie_is_set_or_read() {
        let app = spawn_app_with(|s| {
            s.login_max_failures = 3;
            s.login_device_cookies = false;
        })
        .await;
        let response = login_from(&app, None, "johndoe", "secret").await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("set-cookie").is_none());
    }

    #[tokio::test]
    async fn an_https_issuer_makes_the_cookie_secure() {
        let app = spawn_app_with(|s| s.issuer = Some("https://auth.example.com".into())).await;
        let response = login_from(&app, None, "johndoe", "secret").await;
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
        assert!(set_cookie.contains("Secure"), "{set_cookie}");
    }

    #[tokio::test]
    async fn any_cookie_costs_the_same_work_as_none() {
        // Timing itself is measured where it can be (the benchmark), not in a test on a
        // busy machine: here, the work that dominates it. Every attempt, with whatever
        // cookie, runs exactly one password hash; a cookie adds one lookup only.
        let app = spawn_app_with(|s| s.login_max_failures = 0).await;
        let alices = trusted_cookie(&app, "alice", "secret2").await;
        let johns = trusted_cookie(&app, "johndoe", "secret").await;
        let forged = "f".repeat(43);

        for (case, cookie) in [
            ("none", None),
            ("forged", Some(forged.as_str())),
            ("another user's", Some(alices.as_str())),
            ("malformed", Some("x")),
            ("trusted", Some(johns.as_str())),
        ] {
            for _ in 0..3 {
                let jobs = app.auth.password_hash_jobs();
                let response = login_from(&app, cookie, "johndoe", "wrong").await;
                assert_eq!(response.status(), 400, "{case}");
                assert_eq!(app.auth.password_hash_jobs(), jobs + 1, "{case}");
            }
        }
    }
}
