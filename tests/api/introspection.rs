//! Registered clients, token introspection (RFC 7662) and the metadata document
//! (RFC 8414).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with, status_and_json};

/// Registers `client_id` with the CLI and returns its secret.
pub(crate) fn add_client(app: &TestApp, client_id: &str) -> String {
    let added = app.cli(&["clients", "add", client_id]).assert().success();
    let secret = String::from_utf8(added.get_output().stdout.clone()).unwrap();
    let secret = secret.trim().to_owned();
    assert_eq!(secret.len(), 43, "a 32-byte base64url secret: {secret:?}");
    secret
}

/// Introspects `token` as `client_id` with HTTP Basic.
pub(crate) async fn introspect(
    app: &TestApp,
    client_id: &str,
    secret: &str,
    token: &str,
) -> (u16, Value) {
    let response = app
        .post("/token/introspect")
        .basic_auth(client_id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    status_and_json(response).await
}

async fn assert_inactive(app: &TestApp, secret: &str, token: &str, case: &str) {
    let (status, body) = introspect(app, "billing", secret, token).await;
    assert_eq!((status, body), (200, json!({"active": false})), "{case}");
}

async fn assert_invalid_client(response: reqwest::Response, case: &str) {
    assert_eq!(response.status(), 401, "{case}");
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Basic realm="simple-oauth2""#,
        "{case}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client", "{case}");
    assert!(body["detail"].is_string() && body["error_description"].is_string());
}

both_backends! {
    #[tokio::test]
    async fn a_live_access_token_is_described_to_a_client_with_basic_credentials() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");
        let mobile_secret = add_client(&app, "mobile-app");
        let response = app
            .post_token(&[
                ("username", "johndoe"),
                ("password", "secret"),
                ("scope", "me items"),
                ("client_id", "mobile-app"),
                ("client_secret", &mobile_secret),
            ])
            .await;
        let login: Value = response.json().await.unwrap();
        let token = login["access_token"].as_str().unwrap();

        let response = app
            .post("/token/introspect")
            .basic_auth("billing", Some(&secret))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        let keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "active",
                "scope",
                "username",
                "token_type",
                "token_use",
                "exp",
                "iat",
                "sub",
                "iss",
                "amr",
                "client_id"
            ]
        );
        assert_eq!(body["token_use"], "access_token");
        assert_eq!(body["amr"], serde_json::json!(["pwd"]));
        assert_eq!(body["active"], true);
        assert_eq!(body["scope"], "me items");
        assert_eq!(body["username"], "johndoe");
        assert_eq!(body["sub"], "johndoe");
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["client_id"], "mobile-app");
        assert_eq!(body["iss"], app.address);
        let (iat, exp) = (body["iat"].as_i64().unwrap(), body["exp"].as_i64().unwrap());
        assert_eq!(exp - iat, 1800);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - iat).abs() < 60);
    }

    #[tokio::test]
    async fn form_credentials_work_too_and_a_login_without_client_id_has_none() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");
        let token = app.token_for("johndoe", "secret", "").await;

        let response = app
            .post("/token/introspect")
            .form(&[("token", token.as_str()), ("client_id", "billing"), ("client_secret", &secret)])
            .send()
            .await
            .unwrap();

        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 200);
        assert_eq!(body["active"], true);
        assert_eq!(body["scope"], "");
        assert!(body.get("client_id").is_none(), "{body}");
    }

    #[tokio::test]
    async fn a_live_refresh_token_is_described_only_when_asked_for_by_name() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");
        let (access, refresh) = app.tokens_for("johndoe", "secret", "me").await;
        let with_hint = |token: String, hint: &'static str| {
            let request = app
                .post("/token/introspect")
                .basic_auth("billing", Some(&secret))
                .form(&[("token", token.as_str()), ("token_type_hint", hint)])
                .send();
            async move { status_and_json(request.await.unwrap()).await }
        };

        let (status, body) = with_hint(refresh.clone(), "refresh_token").await;
        assert_eq!(status, 200);
        assert_eq!(body["active"], true);
        assert_eq!(body["scope"], "me");
        assert_eq!(body["token_use"], "refresh_token");
        assert!(body.get("token_type").is_none(), "{body}");
        assert_eq!(body["username"], "johndoe");
        // Without the hint, or with another one, a refresh token is nothing a resource
        // server may accept.
        let (_, body) = introspect(&app, "billing", &secret, &refresh).await;
        assert_eq!(body, serde_json::json!({"active": false}));
        let (_, body) = with_hint(refresh.clone(), "access_token").await;
        assert_eq!(body, serde_json::json!({"active": false}));
        // The hint is only a hint: an access token is described whatever it says.
        let (_, body) = with_hint(access.clone(), "refresh_token").await;
        assert_eq!(body["token_use"], "access_token");
        assert_eq!(body["token_type"], "Bearer");

        assert_eq!(app.refresh(&refresh, None).await.status(), 200);
        let (_, body) = with_hint(refresh.clone(), "refresh_token").await;
        assert_eq!(body, serde_json::json!({"active": false}), "a spent refresh token");
    }

    #[tokio::test]
    async fn anything_but_a_live_token_is_only_inactive() {
        let app = spawn_app_with(|s| s.access_token_ttl = Duration::from_secs(1)).await;
        let secret = add_client(&app, "billing");
        let expiring = app.token_for("johndoe", "secret", "").await;
        let revoked = app.token_for("johndoe", "secret", "").await;
        app.revoke(&revoked).await;
        let alices = app.token_for("alice", "secret2", "").await;
        app.cli(&["users", "add", "bob", "--password-stdin"])
            .write_stdin("builder\n")
            .assert()
            .success();
        let (bobs, bobs_refresh) = app.tokens_for("bob", "builder", "").await;
        app.cli(&["users", "delete", "bob"]).assert().success();
        tokio::time::sleep(Duration::from_millis(1100)).await;

        assert_inactive(&app, &secret, "not-a-token", "malformed").await;
        assert_inactive(&app, &secret, &"a".repeat(43), "unknown").await;
        assert_inactive(&app, &secret, &expiring, "expired").await;
        assert_inactive(&app, &secret, &revoked, "revoked").await;
        assert_inactive(&app, &secret, &alices, "a disabled user's").await;
        assert_inactive(&app, &secret, &bobs, "a deleted user's").await;
        assert_inactive(&app, &secret, &bobs_refresh, "a deleted user's refresh token").await;
    }

    #[tokio::test]
    async fn a_client_must_authenticate_one_way_with_the_right_secret() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");
        let gone = add_client(&app, "gone");
        app.cli(&["clients", "delete", "gone"]).assert().success();
        let token = app.token_for("johndoe", "secret", "").await;
        let introspect = || app.post("/token/introspect");
        let form = [("token", token.as_str())];

        for (case, request) in [
            ("no credentials", introspect().form(&form)),
            ("a wrong secret", introspect().basic_auth("billing", Some("wrong")).form(&form)),
            ("an unknown client", introspect().basic_auth("nobody", Some(&secret)).form(&form)),
            ("a deleted client", introspect().basic_auth("gone", Some(&gone)).form(&form)),
            ("a bearer token", introspect().bearer_auth(&token).form(&form)),
            ("a malformed Basic header", introspect().header("authorization", "Basic !!!").form(&form)),
            (
                "both Basic and form credentials",
                introspect().basic_auth("billing", Some(&secret)).form(&[
                    ("token", token.as_str()),
                    ("client_id", "billing"),
                    ("client_secret", &secret),
                ]),
            ),
            (
                "a form secret without its id",
                introspect().form(&[("token", token.as_str()), ("client_secret", &secret)]),
            ),
        ] {
            assert_invalid_client(request.send().await.unwrap(), case).await;
        }
    }

    #[tokio::test]
    async fn a_missing_token_is_an_invalid_request() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");

        let response = app
            .post("/token/introspect")
            .basic_auth("billing", Some(&secret))
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
    async fn clients_are_listed_without_secrets_and_errors_change_nothing() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");

        let listed = app.cli(&["clients", "list"]).assert().success();
        let listed = String::from_utf8(listed.get_output().stdout.clone()).unwrap();
        assert!(listed.contains("billing"));
        assert!(!listed.contains(&secret));
        for args in [
            &["clients", "add", "billing"][..],
            &["clients", "add", "has space"],
            &["clients", "delete", "nobody"],
        ] {
            let failed = app.cli(args).assert().failure().code(1);
            let stderr = String::from_utf8(failed.get_output().stderr.clone()).unwrap();
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(failed.get_output().stdout.is_empty(), "{args:?}");
        }
        // The first secret still works: the failed add replaced nothing.
        let token = app.token_for("johndoe", "secret", "").await;
        assert_eq!(introspect(&app, "billing", &secret, &token).await.1["active"], true);
    }

    #[tokio::test]
    async fn the_metadata_document_follows_the_settings() {
        let app = spawn_app_with(|s| s.issuer = Some("https://auth.example.com".into())).await;

        let (status, metadata) =
            status_and_json(app.get("/.well-known/oauth-authorization-server").send().await.unwrap())
                .await;

        assert_eq!(status, 200);
        assert_eq!(
            metadata,
            json!({
                "issuer": "https://auth.example.com",
                "token_endpoint": "https://auth.example.com/token",
                "revocation_endpoint": "https://auth.example.com/token/revoke",
                "introspection_endpoint": "https://auth.example.com/token/introspect",
                "grant_types_supported": ["password", "refresh_token"],
                "scopes_supported": ["me", "items"],
                "response_types_supported": [],
                "token_endpoint_auth_methods_supported": ["none"],
                "revocation_endpoint_auth_methods_supported": ["none"],
                "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
            })
        );
        // Every endpoint it names is served here.
        let token = app.token_for("johndoe", "secret", "").await;
        for (endpoint, form) in [
            ("token_endpoint", vec![("username", "johndoe"), ("password", "secret")]),
            ("revocation_endpoint", vec![("token", token.as_str())]),
            ("introspection_endpoint", vec![("token", token.as_str())]),
        ] {
            let path = metadata[endpoint].as_str().unwrap().trim_start_matches("https://auth.example.com");
            let status = app.post(path).form(&form).send().await.unwrap().status();
            assert_ne!(status, 404, "{endpoint}");
        }
    }

    #[tokio::test]
    async fn the_default_issuer_is_where_the_service_listens_and_grants_follow_the_settings() {
        let app = spawn_app_with(|s| s.refresh_token_ttl = Duration::ZERO).await;
        let secret = add_client(&app, "billing");

        let (_, metadata) =
            status_and_json(app.get("/.well-known/oauth-authorization-server").send().await.unwrap())
                .await;

        assert_eq!(metadata["issuer"], app.address);
        assert_eq!(metadata["grant_types_supported"], json!(["password"]));
        let token = app.token_for("johndoe", "secret", "").await;
        assert_eq!(introspect(&app, "billing", &secret, &token).await.1["iss"], app.address);
    }
}

#[tokio::test]
async fn the_openapi_document_describes_introspection_with_basic_auth() {
    let app = spawn_app().await;
    let (_, spec) = status_and_json(app.get("/openapi.json").send().await.unwrap()).await;

    let scheme = &spec["components"]["securitySchemes"]["ClientBasicAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "basic");
    let operation = &spec["paths"]["/token/introspect"]["post"];
    assert_eq!(operation["security"], json!([{"ClientBasicAuth": []}]));
    for status in ["200", "400", "401", "503"] {
        assert!(operation["responses"][status].is_object(), "{status}");
    }
    assert!(spec["paths"]["/.well-known/oauth-authorization-server"]["get"].is_object());
}

/// The status of an introspection after a change made outside this app (the CLI): asked
/// once on SQLite, where such a change counts from the next request; on PostgreSQL asked
/// again until it is what `expected` looks for or a second has passed, the contract's
/// bound for changes made by another process.
async fn introspection_after_outside_change(
    app: &TestApp,
    client_id: &str,
    secret: &str,
    token: &str,
    expected: impl Fn(&(u16, Value)) -> bool,
) -> (u16, Value) {
    let deadline = match app.database.backend() {
        crate::helpers::Backend::Sqlite => Duration::ZERO,
        crate::helpers::Backend::Postgres => Duration::from_secs(1),
    };
    let started = std::time::Instant::now();
    loop {
        let answer = introspect(app, client_id, secret, token).await;
        if expected(&answer) || started.elapsed() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a client can see of an introspection answer: status, the headers it reads, and
/// the body's bytes.
pub(crate) async fn introspection_seen(
    app: &TestApp,
    secret: &str,
    token: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let request = app
        .post("/token/introspect")
        .basic_auth("billing", Some(secret))
        .form(&[("token", token)]);
    response_seen(request.send().await.unwrap()).await
}

async fn response_seen(response: reqwest::Response) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let status = response.status().as_u16();
    let headers = ["content-type", "content-length", "cache-control", "pragma"]
        .iter()
        .map(|name| {
            let value = response.headers().get(*name).map(|v| v.to_str().unwrap());
            (name.to_string(), value.unwrap_or("<absent>").to_owned())
        })
        .collect();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

both_backends! {
    // Client secrets are cached like tokens: adding or deleting a client on the CLI
    // counts from the next introspection (on PostgreSQL, within the second).
    #[tokio::test]
    async fn a_client_added_or_deleted_on_the_cli_counts_from_the_next_introspection() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;
        let other = add_client(&app, "reports");
        // An unknown id, asked twice: what the service read about it must not outlive
        // the client's registration.
        for _ in 0..2 {
            assert_eq!(introspect(&app, "billing", &other, &token).await.0, 401);
        }
        let secret = add_client(&app, "billing");
        let (status, body) = introspection_after_outside_change(
            &app, "billing", &secret, &token, |a| a.0 == 200).await;
        assert_eq!(status, 200, "{body}");
        for _ in 0..3 {
            assert_eq!(introspect(&app, "billing", &secret, &token).await.0, 200);
        }

        app.cli(&["clients", "delete", "billing"]).assert().success();

        let (status, _) = introspection_after_outside_change(
            &app, "billing", &secret, &token, |a| a.0 == 401).await;
        assert_eq!(status, 401);
        let renewed = add_client(&app, "billing");
        let (status, _) = introspection_after_outside_change(
            &app, "billing", &renewed, &token, |a| a.0 == 200).await;
        assert_eq!(status, 200);
        assert_eq!(introspect(&app, "billing", &secret, &token).await.0, 401, "the old secret");
    }

    // Introspection answers from the token cache the bearer check fills: a change to the
    // token or its user counts from the next introspection, as on /users/me.
    #[tokio::test]
    async fn changes_count_from_the_next_introspection_even_when_it_was_cached() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");
        let warm = |token: String| {
            let (app, secret) = (&app, &secret);
            async move {
                for _ in 0..3 {
                    let (status, body) = introspect(app, "billing", secret, &token).await;
                    assert_eq!((status, &body["active"]), (200, &json!(true)), "{body}");
                }
            }
        };
        let inactive = (200, json!({"active": false}));

        // Revoked on this replica: at once, on both backends.
        let revoked = app.token_for("johndoe", "secret", "").await;
        warm(revoked.clone()).await;
        assert_eq!(app.revoke(&revoked).await.status(), 200);
        assert_eq!(introspect(&app, "billing", &secret, &revoked).await, inactive);

        let scoped = app.token_for("johndoe", "secret", "items").await;
        warm(scoped.clone()).await;
        app.cli(&["users", "set-scopes", "johndoe", "me"]).assert().success();
        let (_, body) = introspection_after_outside_change(
            &app, "billing", &secret, &scoped, |a| a.1["scope"] == "").await;
        assert_eq!(body["scope"], "", "a scope the user lost: {body}");

        let disabled = app.token_for("johndoe", "secret", "").await;
        warm(disabled.clone()).await;
        app.cli(&["users", "disable", "johndoe"]).assert().success();
        assert_eq!(
            introspection_after_outside_change(&app, "billing", &secret, &disabled, |a| *a == inactive).await,
            inactive
        );
        app.cli(&["users", "enable", "johndoe"]).assert().success();
        let (status, body) = introspection_after_outside_change(
            &app, "billing", &secret, &disabled, |a| a.1["active"] == true).await;
        assert_eq!((status, &body["active"]), (200, &json!(true)), "{body}");

        app.cli(&["users", "set-password", "johndoe", "--password-stdin"])
            .write_stdin("a new secret\n")
            .assert()
            .success();
        assert_eq!(
            introspection_after_outside_change(&app, "billing", &secret, &disabled, |a| *a == inactive).await,
            inactive
        );
    }

    // A client the caches vouch for is answered before the router; a wrong secret still
    // takes the full path every time, is counted, and fills the limit for the right one.
    #[tokio::test]
    async fn a_wrong_secret_is_counted_even_once_the_caches_vouch_for_the_client() {
        let app = spawn_app_with(|s| s.login_max_failures = 3).await;
        let secret = add_client(&app, "billing");
        let token = app.token_for("johndoe", "secret", "").await;
        for _ in 0..5 {
            assert_eq!(introspect(&app, "billing", &secret, &token).await.0, 200);
        }

        for _ in 0..3 {
            assert_eq!(introspect(&app, "billing", "wrong", &token).await.0, 401);
        }

        assert_eq!(introspect(&app, "billing", &secret, &token).await.0, 429);
    }

    // An introspection answered from the token cache and one answered from the database
    // must be indistinguishable to the client, byte for byte.
    #[tokio::test]
    async fn an_introspection_from_the_token_cache_is_the_same_as_one_from_the_database() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");
        let token = app.token_for("johndoe", "secret", "me items").await;

        let (from_cache, from_database) = app
            .answers_from_cache_and_database(|| introspection_seen(&app, &secret, &token))
            .await;

        assert_eq!(from_cache, from_database);
        assert_eq!(from_cache.0, 200);
        let body: Value = serde_json::from_slice(&from_cache.2).unwrap();
        assert_eq!((&body["active"], &body["scope"]), (&json!(true), &json!("me items")));
        assert_eq!(from_cache.1[2], ("cache-control".into(), "no-store".into()));
    }
}

/// Writes `pieces` to a new connection to the app, waiting `pause` before each, and
/// returns everything the server sent until it closed (at most 20 s).
async fn over_raw_connection(app: &TestApp, pieces: &[&[u8]], pause: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let address = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    for piece in pieces {
        tokio::time::sleep(pause).await;
        socket.write_all(piece).await.unwrap();
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut answer))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    answer
}

/// The head of a `POST /token/introspect` with a form of `length` bytes, and HTTP Basic
/// credentials when given.
fn introspection_head(basic: Option<(&str, &str)>, length: usize) -> String {
    use base64::Engine;

    let authorization = basic.map_or_else(String::new, |(id, secret)| {
        let pair = format!("{id}:{secret}");
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair.as_bytes());
        format!("Authorization: Basic {encoded}\r\n")
    });
    format!(
        "POST /token/introspect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{authorization}\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// `POST /token/introspect` over a raw connection, its body in `pieces` with `pause`
/// between them; returns the status line and the body of the answer.
async fn introspect_in_pieces(
    app: &TestApp,
    secret: &str,
    token: &str,
    pieces: usize,
    pause: Duration,
) -> (String, Vec<u8>) {
    let form = format!("token={token}");
    let head = introspection_head(Some(("billing", secret)), form.len());
    let mut sent = vec![head.as_bytes()];
    sent.extend(form.as_bytes().chunks(form.len().div_ceil(pieces)));
    let answer = over_raw_connection(app, &sent, pause).await;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let status =
        String::from_utf8_lossy(&answer[..answer.iter().position(|b| *b == b'\r').unwrap()]);
    (status.into_owned(), answer[split + 4..].to_vec())
}

// The early answer reads the body of an introspection itself; a body that comes late or
// in pieces is answered all the same, and one that never comes still gets 408.
#[tokio::test]
async fn an_introspection_whose_body_comes_late_or_in_pieces_gets_the_same_answer() {
    let app = spawn_app().await;
    let secret = add_client(&app, "billing");
    let token = app.token_for("johndoe", "secret", "me items").await;
    let (_, _, expected) = introspection_seen(&app, &secret, &token).await;
    let cases = [
        ("at once", 1, Duration::ZERO),
        ("after a pause", 1, Duration::from_millis(300)),
        ("in three pieces, quickly", 3, Duration::from_millis(20)),
        ("in three pieces, slowly", 3, Duration::from_millis(200)),
    ];
    for (case, pieces, pause) in cases {
        let (status, body) = introspect_in_pieces(&app, &secret, &token, pieces, pause).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "{case}");
        assert_eq!(
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&expected),
            "{case}"
        );
    }
}

#[tokio::test]
async fn an_introspection_whose_body_stops_halfway_gets_408() {
    let app = spawn_app().await;
    let secret = add_client(&app, "billing");
    let token = app.token_for("johndoe", "secret", "").await;
    introspection_seen(&app, &secret, &token).await;
    let form = format!("token={token}");
    let head = introspection_head(None, form.len());
    let started = std::time::Instant::now();
    let answer = over_raw_connection(
        &app,
        &[head.as_bytes(), &form.as_bytes()[..10]],
        Duration::ZERO,
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(9) && waited <= Duration::from_secs(12),
        "answered after {waited:?}"
    );
    // The connection's troubles are its own.
    assert_eq!(introspection_seen(&app, &secret, &token).await.0, 200);
}

// HTTP/2 (cleartext, as a resource server next to the service might speak it) is answered
// from the caches too, with the bytes HTTP/1.1 gets.
#[tokio::test]
async fn an_introspection_over_http2_gets_the_same_answer_from_the_caches() {
    let app = spawn_app().await;
    let secret = add_client(&app, "billing");
    let token = app.token_for("johndoe", "secret", "me items").await;
    let http2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let (from_cache, _) = app
        .answers_from_cache_and_database(|| introspection_seen(&app, &secret, &token))
        .await;

    let early = app.early_answers();
    let response = http2
        .post(app.url("/token/introspect"))
        .basic_auth("billing", Some(&secret))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let over_http2 = response_seen(response).await;

    assert_eq!(app.early_answers(), early + 1, "answered before the router");
    assert_eq!(over_http2, from_cache);
}
