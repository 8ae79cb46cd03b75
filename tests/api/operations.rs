//! What operators see: Prometheus metrics on a listener of their own, JSON logs, and
//! audit events.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{ServerProcess, TestApp, TestDatabase, spawn_app, spawn_app_with};

/// The exposition of the app's metrics listener.
async fn exposition(app: &TestApp) -> String {
    let address = app.metrics_address.as_ref().expect("METRICS_ADDR is set");
    let response = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// Checks the text format line by line: comments, then `name{label="value",...} number`,
/// and `# EOF` last.
fn assert_parses(text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                ["HELP ", "TYPE ", "UNIT "]
                    .iter()
                    .any(|kind| comment.starts_with(kind)),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "{line}"
        );
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        if name_end < series.len() {
            let labels = series[name_end..]
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{line}"));
            for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
                assert!(!value.contains('\n'), "{line}");
            }
        }
    }
}

/// The value of one series (`0` when it is not there yet).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

fn logins(outcome: &str) -> String {
    format!("simple_oauth2_logins_total{{outcome=\"{outcome}\"}}")
}

fn bearer(outcome: &str) -> String {
    format!("simple_oauth2_bearer_checks_total{{outcome=\"{outcome}\"}}")
}

both_backends! {
    #[tokio::test]
    async fn counters_move_by_the_right_amount_for_each_outcome() {
        let app = spawn_app_with(|s| {
            s.metrics_addr = Some("127.0.0.1:0".into());
            s.login_max_failures = 2;
            s.refresh_token_reuse_grace = Duration::ZERO;
        })
        .await;
        let before = exposition(&app).await;
        assert_parses(&before);

        let (access, refresh) = app.tokens_for("johndoe", "secret", "").await;
        for _ in 0..2 {
            assert_eq!(app.login("johndoe", "wrong").await.status(), 400);
        }
        assert_eq!(app.login("johndoe", "wrong").await.status(), 429);
        assert_eq!(app.post_token(&[("username", "johndoe")]).await.status(), 400);
        assert_eq!(app.me_status(&access).await, 200);
        assert_eq!(app.me_status(&access).await, 200);
        assert_eq!(app.get("/users/me").send().await.unwrap().status(), 401);
        assert_eq!(app.me_status(&"x".repeat(43)).await, 401);
        assert_eq!(app.refresh(&refresh, None).await.status(), 200);
        assert_eq!(app.refresh(&refresh, None).await.status(), 400); // reused: the session ends
        let (other, _) = app.tokens_for("alice", "secret2", "").await;
        assert_eq!(app.revoke(&other).await.status(), 200);
        assert_eq!(app.get("/nope/a-secret-looking-path").send().await.unwrap().status(), 404);

        let after = exposition(&app).await;
        assert_parses(&after);
        let moved = |series: &str| sample(&after, series) - sample(&before, series);
        assert_eq!(moved(&logins("issued")), 2.0);
        assert_eq!(moved(&logins("invalid_grant")), 2.0);
        assert_eq!(moved(&logins("throttled")), 1.0);
        assert_eq!(moved(&logins("invalid_request")), 1.0);
        assert_eq!(moved(&bearer("ok")), 2.0);
        assert_eq!(moved(&bearer("not_authenticated")), 1.0);
        assert_eq!(moved(&bearer("invalid_token")), 1.0);
        assert_eq!(moved("simple_oauth2_refreshes_total{outcome=\"issued\"}"), 1.0);
        assert_eq!(moved("simple_oauth2_refreshes_total{outcome=\"invalid_grant\"}"), 1.0);
        assert_eq!(moved("simple_oauth2_refresh_token_reuse_total"), 1.0);
        assert_eq!(moved("simple_oauth2_revocations_total{kind=\"access_token\"}"), 1.0);
        let lookups = moved("simple_oauth2_token_cache_lookups_total{result=\"hit\"}")
            + moved("simple_oauth2_token_cache_lookups_total{result=\"miss\"}");
        assert_eq!(lookups, 3.0, "two checks of a live token and one of an unknown one");
        assert!(after.contains("simple_oauth2_password_hashing_in_flight "));
        assert!(after.contains("simple_oauth2_password_hashing_waiting "));
        assert!(after.contains("simple_oauth2_database_errors_total "));
        assert!(
            moved(
                "simple_oauth2_http_request_duration_seconds_count\
                 {route=\"/users/me\",method=\"GET\",status=\"200\"}"
            ) >= 2.0
        );
        assert!(after.contains("route=\"unmatched\""));
        for leak in ["a-secret-looking-path", "johndoe", "alice", &access, &refresh, "127.0.0.1"] {
            assert!(!after.contains(leak), "{leak:?} is in the exposition");
        }
    }
}

#[tokio::test]
async fn metrics_are_not_served_on_the_public_port_nor_without_the_setting() {
    let with = spawn_app_with(|s| s.metrics_addr = Some("127.0.0.1:0".into())).await;
    let without = spawn_app().await;

    assert_eq!(with.get("/metrics").send().await.unwrap().status(), 404);
    assert!(without.metrics_address.is_none());
    assert_eq!(without.get("/metrics").send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_logs_every_line_parses_and_audit_events_carry_their_fields() {
    let database = TestDatabase::new().await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let envs = [
        ("LOG_FORMAT", "json"),
        ("LOGIN_MAX_FAILURES", "1"),
        ("REFRESH_TOKEN_REUSE_GRACE", "0"),
    ];
    let mut command = ServerProcess::command(ServerProcess::BINARY, &database.url, &envs);
    command
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let server = ServerProcess::spawn(command);
    let base = server.address.clone();
    let client = reqwest::Client::new();
    let login = |username: &'static str, password: &'static str| {
        client
            .post(format!("{base}/token"))
            .form(&[("username", username), ("password", password)])
            .send()
    };

    let tokens: Value = login("johndoe", "secret")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(
        login("alice", "not-her-password").await.unwrap().status(),
        400
    );
    assert_eq!(
        login("alice", "not-her-password").await.unwrap().status(),
        429
    );
    let refresh_with = |refresh_token: String| {
        client
            .post(format!("{base}/token"))
            .form(&[
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", refresh_token),
            ])
            .send()
    };
    assert_eq!(refresh_with(refresh.clone()).await.unwrap().status(), 200);
    // The same token again, with no grace: reuse.
    assert_eq!(refresh_with(refresh.clone()).await.unwrap().status(), 400);
    let body: Value = login("johndoe", "secret")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let other = body["access_token"].as_str().unwrap().to_owned();
    let revoked = client
        .post(format!("{base}/token/revoke"))
        .form(&[("token", other.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let in_query = client
        .get(format!("{base}/users/me?access_token={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 401);
    let cli = assert_cmd::Command::new(ServerProcess::BINARY)
        .env("DATABASE_URL", &database.url)
        .env("LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .args(["users", "disable", "johndoe"])
        .assert()
        .success();
    drop(server);

    let mut log = std::fs::read_to_string(&log_path).unwrap();
    log += &String::from_utf8_lossy(&cli.get_output().stderr);
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    for line in &lines {
        for field in ["timestamp", "level", "target", "fields"] {
            assert!(line.get(field).is_some(), "{field} in {line}");
        }
    }
    let audit = |event: &str| -> Value {
        lines
            .iter()
            .find(|line| line["target"] == "audit" && line["fields"]["event"] == event)
            .unwrap_or_else(|| panic!("no {event} event in:\n{log}"))["fields"]
            .clone()
    };
    assert_eq!(audit("login.succeeded")["username"], "johndoe");
    assert_eq!(audit("login.succeeded")["client"], "127.0.0.1");
    assert_eq!(audit("login.failed")["username"], "alice");
    assert_eq!(audit("login.failed")["client"], "127.0.0.1");
    assert_eq!(audit("login.throttled")["username"], "alice");
    assert_eq!(audit("token.refreshed")["username"], "johndoe");
    assert_eq!(audit("session.reuse_detected")["username"], "johndoe");
    assert_eq!(audit("token.revoked")["client"], "127.0.0.1");
    assert_eq!(audit("user.disabled")["name"], "johndoe");
    for secret in [
        "secret",
        "not-her-password",
        access.as_str(),
        refresh.as_str(),
        other.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret:?} reached a log");
    }
}

#[tokio::test]
async fn the_start_up_line_is_json_too_when_the_logs_are() {
    let database = TestDatabase::new().await;
    let mut command = ServerProcess::command(
        ServerProcess::BINARY,
        &database.url,
        &[("LOG_FORMAT", "json")],
    );
    command.stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();

    let parsed: Value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line}"));
    assert_eq!(parsed["level"], "INFO");
    assert!(
        parsed["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("serving on http://")
    );
}
