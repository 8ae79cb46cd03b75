//! The second security review: the same answer on both backends for bytes PostgreSQL
//! cannot store, no cache emptied by requests that change nothing, no 429 for correct
//! logins in flight, no lockout by impossible passwords, registered client ids that need
//! their secret, and client authentication throttled like logins.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;

use crate::{
    helpers::{spawn_app, spawn_app_with, status_and_json},
    introspection::{add_client, introspect},
};

both_backends! {
    #[tokio::test]
    async fn a_nul_byte_in_any_field_gets_the_answer_any_wrong_value_gets() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");
        let nul = "a\0b";
        let token_error = |form: Vec<(&'static str, &'static str)>| {
            let request = app.post("/token").form(&form).send();
            async move { status_and_json(request.await.unwrap()).await }
        };

        let (status, body) = token_error(vec![("username", "a\0b"), ("password", "secret")]).await;
        assert_eq!((status, body["detail"].as_str()), (400, Some("Incorrect username or password")));
        let (status, body) = token_error(vec![("username", "johndoe"), ("password", "se\0cret")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        let (status, body) =
            token_error(vec![("username", "johndoe"), ("password", "secret"), ("scope", "me\0")])
                .await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")));
        let (status, body) =
            token_error(vec![("grant_type", "pass\0word"), ("username", "johndoe")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_grant_type")));
        let (status, body) =
            token_error(vec![("grant_type", "refresh_token"), ("refresh_token", "a\0b")]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        // A client id no registered client has is accepted and not recorded.
        let (status, body) = token_error(vec![
            ("username", "johndoe"),
            ("password", "secret"),
            ("client_id", "x\0y"),
            ("client_secret", "s\0"),
        ])
        .await;
        assert_eq!(status, 200, "{body}");
        let (_, described) =
            introspect(&app, "billing", &secret, body["access_token"].as_str().unwrap()).await;
        assert!(described.get("client_id").is_none(), "{described}");

        assert_eq!(app.revoke(nul).await.status(), 200);
        let (status, body) = introspect(&app, "billing", &secret, nul).await;
        assert_eq!((status, body), (200, serde_json::json!({"active": false})));
        let (status, _) = introspect(&app, "bil\0ling", &secret, "x").await;
        assert_eq!(status, 401);
        let response = app
            .post("/token/introspect")
            .form(&[("token", "x"), ("client_id", "bil\0ling"), ("client_secret", "s")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);

        let health = app.get("/health").send().await.unwrap();
        assert_eq!(health.status(), 200, "no outage was counted");
        assert_eq!(app.login("johndoe", "secret").await.status(), 200);
    }

    #[tokio::test]
    async fn revoking_unknown_tokens_empties_no_token_cache() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;
        // Warm: the login's own writes have been read, and the cache answers.
        let started = std::time::Instant::now();
        loop {
            let hits = app.auth.token_cache_stats().hits;
            assert_eq!(app.me_status(&token).await, 200);
            if app.auth.token_cache_stats().hits > hits {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(2), "the cache never answered");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = app.auth.token_cache_stats();

        for i in 0..20 {
            let unknown = format!("{i:0>43}");
            assert_eq!(app.revoke(&unknown).await.status(), 200);
        }
        app.cli(&["users", "logout", "alice"]).assert().success();
        // Time for a notification from the database to arrive, were one sent.
        tokio::time::sleep(Duration::from_millis(400)).await;
        for _ in 0..10 {
            assert_eq!(app.me_status(&token).await, 200);
        }

        let after = app.auth.token_cache_stats();
        assert_eq!(after.misses, before.misses, "the cache was emptied");
        assert!(after.hits >= before.hits + 10, "{before:?} -> {after:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_correct_logins_are_never_throttled() {
        let app = spawn_app_with(|s| s.login_max_failures = 4).await;

        for _ in 0..3 {
            let statuses = join_all((0..12).map(|_| app.login("johndoe", "secret"))).await;
            for response in statuses {
                assert_eq!(response.status(), 200);
            }
        }
    }

    #[tokio::test]
    async fn passwords_that_can_never_be_right_do_not_lock_the_username() {
        let app = spawn_app().await;
        let long = "x".repeat(1025);

        for _ in 0..15 {
            let (status, body) = status_and_json(app.login("johndoe", &long).await).await;
            assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")));
        }

        assert_eq!(app.login("johndoe", "secret").await.status(), 200);
    }

    #[tokio::test]
    async fn a_registered_client_id_needs_its_secret_to_be_recorded() {
        let app = spawn_app().await;
        let billing = add_client(&app, "billing");
        let mobile = add_client(&app, "mobile-app");
        let login = |extra: Vec<(&'static str, String)>| {
            let mut form = vec![("username", "johndoe".to_owned()), ("password", "secret".to_owned())];
            form.extend(extra);
            let request = app.post("/token").form(&form).send();
            async move { request.await.unwrap() }
        };
        let recorded = |response: reqwest::Response| {
            let billing = billing.clone();
            let app = &app;
            async move {
                let (status, body) = status_and_json(response).await;
                assert_eq!(status, 200, "{body}");
                let token = body["access_token"].as_str().unwrap().to_owned();
                let (_, described) = introspect(app, "billing", &billing, &token).await;
                described.get("client_id").and_then(Value::as_str).map(str::to_owned)
            }
        };

        for (case, extra) in [
            ("no secret", vec![("client_id", "mobile-app".to_owned())]),
            (
                "a wrong secret",
                vec![("client_id", "mobile-app".to_owned()), ("client_secret", "wrong".to_owned())],
            ),
        ] {
            let response = login(extra).await;
            assert_eq!(response.status(), 401, "{case}");
            assert_eq!(response.headers()["www-authenticate"], r#"Basic realm="simple-oauth2""#);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "invalid_client", "{case}");
        }
        let with_secret =
            login(vec![("client_id", "mobile-app".to_owned()), ("client_secret", mobile.clone())]);
        assert_eq!(recorded(with_secret.await).await.as_deref(), Some("mobile-app"));
        let by_basic = app
            .post("/token")
            .basic_auth("mobile-app", Some(&mobile))
            .form(&[("username", "johndoe"), ("password", "secret")])
            .send()
            .await
            .unwrap();
        assert_eq!(recorded(by_basic).await.as_deref(), Some("mobile-app"));
        let public = login(vec![("client_id", "some-spa".to_owned())]);
        assert_eq!(recorded(public.await).await, None);
        let swagger = app
            .post("/token")
            .header("authorization", "Basic Og==")
            .form(&[("grant_type", "password"), ("username", "johndoe"), ("password", "secret")])
            .send()
            .await
            .unwrap();
        assert_eq!(recorded(swagger).await, None);
    }

    #[tokio::test]
    async fn failed_client_authentication_is_throttled_like_logins() {
        let app = spawn_app_with(|s| s.login_max_failures = 3).await;
        let secret = add_client(&app, "billing");
        let token = app.token_for("johndoe", "secret", "").await;

        for _ in 0..3 {
            assert_eq!(introspect(&app, "billing", "wrong", &token).await.0, 401);
        }
        let response = app
            .post("/token/introspect")
            .basic_auth("billing", Some(&secret))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 429);
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry_after > 0 && retry_after <= 15 * 60);
        let body: Value = response.json().await.unwrap();
        assert!(body["detail"].is_string() && body["error"].is_string(), "{body}");
        // Another client is not locked by it.
        let other = add_client(&app, "reports");
        assert_eq!(introspect(&app, "reports", &other, &token).await.0, 200);
    }
}

both_backends! {
    #[tokio::test]
    async fn housekeeping_deletes_a_backlog_many_batches_long() {
        let app = spawn_app().await;
        let live = app.token_for("johndoe", "secret", "").await;
        let insert_expired = match crate::helpers::backend() {
            crate::helpers::Backend::Sqlite => {
                "with recursive n(i) as (select 1 union all select i + 1 from n where i < 9000)
                 insert into access_tokens (token_hash, user_id, scopes, issued_at, expires_at)
                 select randomblob(32), (select id from users where username = 'johndoe'), '', 0, 1
                 from n"
            }
            crate::helpers::Backend::Postgres => {
                "insert into access_tokens (token_hash, user_id, scopes, issued_at, expires_at)
                 select decode(md5(i::text) || md5(i::text), 'hex'),
                        (select id from users where username = 'johndoe'), '', 0, 1
                 from generate_series(1, 9000) as i"
            }
        };
        app.sql_execute(insert_expired, &[]).await;

        let deleted = app.auth.sweep().await.expect("housekeeping runs");

        assert!(deleted >= 9000, "{deleted} rows deleted");
        assert_eq!(app.sql_i64("select count(*) from access_tokens").await, 1);
        assert_eq!(app.me_status(&live).await, 200);
    }
}

both_backends! {
    #[tokio::test]
    async fn a_login_read_before_a_password_change_starts_no_session_after_it() {
        use simple_oauth2::{
            scope::Scopes,
            store::{NewAccessToken, NewDevice, NewSession},
        };
        let app = spawn_app().await;
        let store = app.auth.store();
        // What a login in flight read before the owner changed the password.
        let read = store.find_credentials("johndoe").await.unwrap().unwrap();
        app.cli(&["users", "set-password", "johndoe", "--password-stdin"])
            .write_stdin("newsecret\n")
            .assert()
            .success();
        let scopes = Scopes::default();
        let now = 1_900_000_000_000;

        let started = store
            .start_session(
                NewSession {
                    user_id: read.user.id,
                    client_id: None,
                    scopes: &scopes,
                    started_at: now,
                    expires_at: now + 60_000,
                    max_per_user: 100,
                    amr: "pwd",
                    dpop_jkt: None,
                    password_changed_at: read.password_changed_at,
                },
                NewAccessToken { digest: &[7; 32], scopes: &scopes, expires_at: now + 60_000 },
                Some(&[8; 32]),
            )
            .await
            .unwrap();
        let trusted = store
            .trust_device(NewDevice {
                digest: &[9; 32],
                user_id: read.user.id,
                now,
                expires_at: now + 60_000,
                replacing: None,
                max_per_user: 100,
                password_changed_at: read.password_changed_at,
            })
            .await
            .unwrap();

        assert!(!started, "a session after the password change");
        assert!(!trusted, "a trusted device after the password change");
        assert_eq!(app.sql_i64("select count(*) from sessions").await, 0);
        assert_eq!(app.sql_i64("select count(*) from devices").await, 0);
        // A login that reads the user now starts one.
        assert_eq!(app.login("johndoe", "newsecret").await.status(), 200);
    }
}

both_backends! {
    #[tokio::test]
    async fn a_registered_clients_session_is_refreshed_only_by_that_client() {
        let app = spawn_app().await;
        let mobile = add_client(&app, "mobile-app");
        let other = add_client(&app, "billing");
        let response = app
            .post("/token")
            .basic_auth("mobile-app", Some(&mobile))
            .form(&[("username", "johndoe"), ("password", "secret")])
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        let refresh = body["refresh_token"].as_str().unwrap().to_owned();
        let refresh_as = |id: &'static str, secret: Option<String>| {
            let mut request = app.post("/token");
            if let Some(secret) = secret {
                request = request.basic_auth(id, Some(secret));
            }
            let request = request
                .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())])
                .send();
            async move { status_and_json(request.await.unwrap()).await }
        };

        for (case, id, secret) in [
            ("no client", "mobile-app", None),
            ("a wrong secret", "mobile-app", Some("wrong".to_owned())),
            ("another client", "billing", Some(other.clone())),
        ] {
            let (status, body) = refresh_as(id, secret).await;
            assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{case}");
        }
        let spent = app
            .sql_i64("select count(*) from refresh_tokens where spent_at is not null")
            .await;
        assert_eq!(spent, 0, "nothing was spent");

        let (status, body) = refresh_as("mobile-app", Some(mobile.clone())).await;
        assert_eq!(status, 200, "{body}");
        // A public client's session needs no client.
        let (_, public) = app.tokens_for("johndoe", "secret", "").await;
        assert_eq!(app.refresh(&public, None).await.status(), 200);
    }
}
