//! The second factor (TOTP, RFC 6238): enrolment by the user over HTTP and by an operator
//! on the CLI, every row of the contract's login table, replays (on one replica and
//! across two), the code appended to the password, refresh, `amr` in introspection, and
//! failure counting. Codes are computed here with the RFC 6238 arithmetic at the moment
//! of sending, away from a step boundary.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use reqwest::{Client, Response};
use serde_json::{Value, json};
use totp_rs::{Builder, Secret};

use crate::helpers::{
    Backend, ServerProcess, TestApp, TestDatabase, on_backend, say_skipped, spawn_app,
    spawn_app_with, status_and_json,
};

const STEP_SECONDS: u64 = 30;

/// The 6-digit code of `secret` (base32) for time step `step` (RFC 6238, HMAC-SHA-1).
pub fn code(secret: &str, step: u64) -> String {
    let secret = Secret::try_from_base32(secret).expect("a base32 secret");
    let totp = Builder::new()
        .with_secret(secret)
        .build()
        .expect("a valid TOTP");
    totp.generate(step * STEP_SECONDS).to_string()
}

/// A 6-digit code that is none of the codes the service accepts around `step`.
fn wrong_code(secret: &str, step: u64) -> String {
    let accepted = [
        code(secret, step - 1),
        code(secret, step),
        code(secret, step + 1),
    ];
    (0..)
        .map(|n| format!("{n:06}"))
        .find(|candidate| !accepted.contains(candidate))
        .unwrap()
}

/// The current time step, once at least `margin` of it remains: requests made within
/// the margin are answered in this same step. Waits into the next step when needed.
async fn step_with(margin: Duration) -> u64 {
    loop {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let left = STEP_SECONDS as f64 - now.as_secs_f64() % STEP_SECONDS as f64;
        if left >= margin.as_secs_f64() {
            return now.as_secs() / STEP_SECONDS;
        }
        tokio::time::sleep(Duration::from_secs_f64(left + 0.05)).await;
    }
}

/// The current step, with room for one request.
pub async fn step_now() -> u64 {
    step_with(Duration::from_secs(3)).await
}

/// The current step, with room for a sequence of logins.
async fn step_for_a_sequence() -> u64 {
    step_with(Duration::from_secs(12)).await
}

/// The `secret` parameter of an `otpauth://` URI.
pub fn secret_of(uri: &str) -> String {
    uri.split(['?', '&'])
        .find_map(|param| param.strip_prefix("secret="))
        .expect("a secret in the URI")
        .to_owned()
}

/// `users totp enable NAME` on the app's database; returns the URI it printed.
pub fn enable_on_cli(app: &TestApp, username: &str) -> String {
    let done = app
        .cli(&["users", "totp", "enable", username])
        .assert()
        .success();
    let stdout = String::from_utf8(done.get_output().stdout.clone()).unwrap();
    // Not a terminal: the URI alone.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let uri = stdout.trim().to_owned();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    uri
}

/// A password login with a `totp` field.
async fn login_with_code(app: &TestApp, password: &str, totp: &str) -> Response {
    app.post_token(&[
        ("username", "johndoe"),
        ("password", password),
        ("totp", totp),
    ])
    .await
}

/// The token endpoint's 400 `invalid_grant` with this detail.
async fn assert_invalid_grant(response: Response, detail: &str, case: &str) {
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{case}: {body}");
    assert_eq!(body["detail"], detail, "{case}");
    assert_eq!(body["error"], "invalid_grant", "{case}");
    assert!(body["error_description"].is_string(), "{case}");
}

async fn assert_logged_in(response: Response, case: &str) -> Value {
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 200, "{case}: {body}");
    assert!(body["access_token"].is_string(), "{case}");
    body
}

/// `method path` with a bearer token and, when given, the form field `code`.
fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    token: &str,
    code: Option<&str>,
) -> impl Future<Output = Response> + use<> {
    let mut request = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(token);
    if let Some(code) = code {
        request = request.form(&[("code", code)]);
    }
    async move { request.send().await.expect("request sent") }
}

async fn assert_incorrect_code(response: Response, case: &str) {
    let (status, body) = status_and_json(response).await;
    assert_eq!(
        (status, body),
        (400, json!({"detail": "Incorrect one-time code"})),
        "{case}"
    );
}

/// Registers `client_id` with the CLI and returns its secret.
fn add_client(app: &TestApp, client_id: &str) -> String {
    let added = app.cli(&["clients", "add", client_id]).assert().success();
    String::from_utf8(added.get_output().stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

async fn introspect(app: &TestApp, secret: &str, form: &[(&str, &str)]) -> Value {
    let response = app
        .post("/token/introspect")
        .basic_auth("billing", Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 200, "{body}");
    body
}

both_backends! {
    #[tokio::test]
    async fn enrolment_over_http_is_pending_until_confirmed_and_then_required() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;

        let response = call(&app, "POST", "/users/me/totp", &token, None).await;
        assert_eq!(response.headers()["cache-control"], "no-store");
        let (status, first) = status_and_json(response).await;
        assert_eq!(status, 200, "{first}");
        let first_secret = first["secret"].as_str().unwrap().to_owned();
        let uri = first["otpauth_uri"].as_str().unwrap();
        assert!(
            uri.starts_with("otpauth://totp/127.0.0.1:johndoe?") && uri.contains("issuer=127.0.0.1"),
            "{uri}"
        );
        assert_eq!(secret_of(uri), first_secret);

        // Pending: not yet required.
        assert_logged_in(app.login("johndoe", "secret").await, "pending").await;

        // Enrolling again while pending replaces the secret.
        let (status, second) = status_and_json(call(&app, "POST", "/users/me/totp", &token, None).await).await;
        assert_eq!(status, 200);
        let secret = second["secret"].as_str().unwrap().to_owned();
        assert_ne!(secret, first_secret);

        let step = step_now().await;
        let confirm = |code: String| call(&app, "POST", "/users/me/totp/confirm", &token, Some(&code));
        assert_incorrect_code(confirm(code(&first_secret, step)).await, "the replaced secret's code").await;
        assert_incorrect_code(confirm(wrong_code(&secret, step)).await, "a wrong code").await;
        assert_incorrect_code(
            call(&app, "POST", "/users/me/totp/confirm", &token, None).await,
            "no code",
        )
        .await;
        assert_logged_in(app.login("johndoe", "secret").await, "still pending").await;

        let step = step_for_a_sequence().await;
        let (status, body) = status_and_json(confirm(code(&secret, step)).await).await;
        assert_eq!((status, body), (200, json!({"status": "active"})));

        let (status, body) = status_and_json(call(&app, "POST", "/users/me/totp", &token, None).await).await;
        assert_eq!(status, 409, "{body}");
        assert_invalid_grant(app.login("johndoe", "secret").await, "One-time code required", "active").await;
        // The code that confirmed is used; the next step's is not.
        assert_invalid_grant(
            login_with_code(&app, "secret", &code(&secret, step)).await,
            "Incorrect one-time code",
            "the confirming code again",
        )
        .await;
        assert_logged_in(login_with_code(&app, "secret", &code(&secret, step + 1)).await, "next step").await;
    }

    #[tokio::test]
    async fn every_row_of_the_login_table_for_a_user_with_a_second_factor() {
        let app = spawn_app().await;
        let secret = secret_of(&enable_on_cli(&app, "johndoe"));
        let step = step_for_a_sequence().await;

        assert_invalid_grant(app.login("johndoe", "secret").await, "One-time code required", "no totp").await;
        assert_invalid_grant(
            login_with_code(&app, "secret", "").await,
            "One-time code required",
            "an empty totp",
        )
        .await;
        for (case, totp) in [
            ("a wrong code", wrong_code(&secret, step)),
            ("a code two steps ahead", code(&secret, step + 2)),
            ("five digits", code(&secret, step)[1..].to_owned()),
            ("a NUL byte", format!("{}\0", &code(&secret, step)[1..])),
            ("letters", "abcdef".to_owned()),
        ] {
            assert_invalid_grant(
                login_with_code(&app, "secret", &totp).await,
                "Incorrect one-time code",
                case,
            )
            .await;
        }

        // A wrong password is answered exactly as today, with or without a right code,
        // byte for byte as for an unknown user.
        let unknown = app
            .post_token(&[("username", "nobody"), ("password", "secret")])
            .await
            .bytes()
            .await
            .unwrap();
        let right = code(&secret, step);
        for (case, response) in [
            ("with a right code", login_with_code(&app, "wrong", &right).await),
            ("without a code", app.login("johndoe", "wrong").await),
        ] {
            assert_eq!(response.status(), 400, "{case}");
            assert_eq!(response.bytes().await.unwrap(), unknown, "{case}");
        }

        let body = assert_logged_in(login_with_code(&app, "secret", &right).await, "right code").await;
        assert_eq!(app.me_status(body["access_token"].as_str().unwrap()).await, 200);
        assert_invalid_grant(
            login_with_code(&app, "secret", &right).await,
            "Incorrect one-time code",
            "the same code again",
        )
        .await;
        assert_invalid_grant(
            login_with_code(&app, "secret", &code(&secret, step - 1)).await,
            "Incorrect one-time code",
            "an earlier step's code after a later one",
        )
        .await;
    }

    #[tokio::test]
    async fn codes_of_the_step_before_and_after_are_accepted_each_once() {
        let app = spawn_app().await;
        let secret = secret_of(&enable_on_cli(&app, "johndoe"));
        let step = step_for_a_sequence().await;

        for offset in [-1_i64, 0, 1] {
            let code = code(&secret, step.checked_add_signed(offset).unwrap());
            assert_logged_in(login_with_code(&app, "secret", &code).await, &format!("step {offset:+}")).await;
            assert_invalid_grant(
                login_with_code(&app, "secret", &code).await,
                "Incorrect one-time code",
                &format!("step {offset:+} again"),
            )
            .await;
        }
    }

    #[tokio::test]
    async fn the_same_code_sent_many_times_at_once_logs_in_once() {
        let app = spawn_app().await;
        let secret = secret_of(&enable_on_cli(&app, "johndoe"));
        let step = step_for_a_sequence().await;
        let code = code(&secret, step);

        let answers = join_all((0..6).map(|_| login_with_code(&app, "secret", &code))).await;
        let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
        assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|&&s| s == 400).count(), 5, "{statuses:?}");
    }

    #[tokio::test]
    async fn the_code_may_be_appended_to_the_password_when_no_totp_field_is_sent() {
        let app = spawn_app().await;
        let secret = secret_of(&enable_on_cli(&app, "johndoe"));
        let step = step_for_a_sequence().await;

        assert_logged_in(
            app.login("johndoe", &format!("secret{}", code(&secret, step - 1))).await,
            "appended",
        )
        .await;
        assert_invalid_grant(
            app.login("johndoe", &format!("secret{}", wrong_code(&secret, step))).await,
            "Incorrect one-time code",
            "a wrong code appended",
        )
        .await;
        // With a totp field, the password is taken as it is.
        assert_invalid_grant(
            login_with_code(&app, &format!("secret{}", code(&secret, step)), &code(&secret, step)).await,
            "Incorrect username or password",
            "appended and in the field",
        )
        .await;

        // A password that ends in six digits: without a factor it is simply the password;
        // with one, six trailing digits are always the code (one argon2 verification).
        app.cli(&["users", "add", "bob", "--password-stdin"])
            .write_stdin("hunter123456\n")
            .assert()
            .success();
        let bob = |password: &str, totp: Option<&str>| {
            let mut form = vec![("username", "bob".to_owned()), ("password", password.to_owned())];
            if let Some(totp) = totp {
                form.push(("totp", totp.to_owned()));
            }
            let app = &app;
            async move { app.post("/token").form(&form).send().await.unwrap() }
        };
        assert_logged_in(bob("hunter123456", None).await, "bob without a factor").await;
        let bob_secret = secret_of(&enable_on_cli(&app, "bob"));
        assert_invalid_grant(
            bob("hunter123456", None).await,
            "Incorrect username or password",
            "bob's password alone is taken as a password and a code",
        )
        .await;
        assert_logged_in(
            bob(&format!("hunter123456{}", code(&bob_secret, step)), None).await,
            "bob's password with the code appended",
        )
        .await;
        assert_logged_in(
            bob("hunter123456", Some(&code(&bob_secret, step + 1))).await,
            "bob's password with the code in the field",
        )
        .await;
    }

    #[tokio::test]
    async fn wrong_codes_count_as_failed_logins_and_a_missing_code_does_not() {
        let app = spawn_app_with(|settings| settings.login_max_failures = 3).await;
        let secret = secret_of(&enable_on_cli(&app, "johndoe"));
        let step = step_for_a_sequence().await;

        for _ in 0..5 {
            assert_invalid_grant(app.login("johndoe", "secret").await, "One-time code required", "no code").await;
        }
        assert_logged_in(login_with_code(&app, "secret", &code(&secret, step - 1)).await, "after five without").await;

        let wrong = wrong_code(&secret, step);
        for n in 0..3 {
            assert_invalid_grant(
                login_with_code(&app, "secret", &wrong).await,
                "Incorrect one-time code",
                &format!("wrong code {n}"),
            )
            .await;
        }
        let response = login_with_code(&app, "secret", &code(&secret, step)).await;
        assert_eq!(response.status(), 429, "three wrong codes use up the limit");
        assert!(response.headers().contains_key("retry-after"));
    }

    #[tokio::test]
    async fn only_a_full_login_earns_a_device_cookie_and_a_trusted_device_still_needs_a_code() {
        let app = spawn_app_with(|settings| settings.login_max_failures = 2).await;
        let secret = secret_of(&enable_on_cli(&app, "johndoe"));
        let step = step_for_a_sequence().await;
        let login_from = |cookie: Option<&str>, totp: Option<String>| {
            let mut form = vec![("username", "johndoe".to_owned()), ("password", "secret".to_owned())];
            form.extend(totp.map(|totp| ("totp", totp)));
            let mut request = app.post("/token").form(&form);
            if let Some(cookie) = cookie {
                request = request.header("cookie", format!("device={cookie}"));
            }
            request.send()
        };
        let device_cookie = |response: &Response| {
            response
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .find_map(|value| value.strip_prefix("device="))
                .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
        };

        let required = login_from(None, None).await.unwrap();
        assert_eq!(required.status(), 400);
        assert_eq!(device_cookie(&required), None, "the password alone earns no trust");
        let full = login_from(None, Some(code(&secret, step - 1))).await.unwrap();
        assert_eq!(full.status(), 200);
        let cookie = device_cookie(&full).expect("a device cookie after a full login");

        // A stranger's wrong codes lock the username for untrusted clients...
        let wrong = wrong_code(&secret, step);
        for _ in 0..2 {
            let response = login_from(None, Some(wrong.clone())).await.unwrap();
            assert_eq!(response.status(), 400);
        }
        assert_eq!(login_from(None, Some(code(&secret, step))).await.unwrap().status(), 429);
        // ...not for the trusted device, which still needs a code.
        let response = login_from(Some(&cookie), None).await.unwrap();
        assert_invalid_grant(response, "One-time code required", "trusted, no code").await;
        let response = login_from(Some(&cookie), Some(code(&secret, step))).await.unwrap();
        assert_logged_in(response, "trusted, with a code").await;
    }

    #[tokio::test]
    async fn refresh_needs_no_code_and_introspection_says_how_the_session_began() {
        let app = spawn_app().await;
        let client_secret = add_client(&app, "billing");
        let secret = secret_of(&enable_on_cli(&app, "johndoe"));
        let step = step_now().await;

        let body = assert_logged_in(login_with_code(&app, "secret", &code(&secret, step)).await, "with a code").await;
        let access = body["access_token"].as_str().unwrap();
        let refresh = body["refresh_token"].as_str().unwrap();
        let described = introspect(&app, &client_secret, &[("token", access)]).await;
        assert_eq!(described["amr"], json!(["pwd", "otp"]), "{described}");

        let (status, refreshed) = status_and_json(app.refresh(refresh, None).await).await;
        assert_eq!(status, 200, "a refresh needs no code: {refreshed}");
        let access = refreshed["access_token"].as_str().unwrap();
        let refresh = refreshed["refresh_token"].as_str().unwrap();
        assert_eq!(introspect(&app, &client_secret, &[("token", access)]).await["amr"], json!(["pwd", "otp"]));
        let described = introspect(
            &app,
            &client_secret,
            &[("token", refresh), ("token_type_hint", "refresh_token")],
        )
        .await;
        assert_eq!(described["amr"], json!(["pwd", "otp"]), "{described}");

        // Without a factor, a password alone.
        app.cli(&["users", "totp", "disable", "johndoe"]).assert().success();
        let access = app.token_for("johndoe", "secret", "").await;
        assert_eq!(introspect(&app, &client_secret, &[("token", &access)]).await["amr"], json!(["pwd"]));
    }

    #[tokio::test]
    async fn removing_the_factor_needs_a_current_unused_code() {
        let app = spawn_app().await;
        let secret = secret_of(&enable_on_cli(&app, "johndoe"));
        let step = step_for_a_sequence().await;
        let used = code(&secret, step);
        let body = assert_logged_in(login_with_code(&app, "secret", &used).await, "with a code").await;
        let token = body["access_token"].as_str().unwrap();

        for (case, code) in [
            ("no code", None),
            ("an empty code", Some(String::new())),
            ("a wrong code", Some(wrong_code(&secret, step))),
            ("the code used to log in", Some(used.clone())),
            ("a NUL byte", Some("12345\0".to_owned())),
        ] {
            assert_incorrect_code(call(&app, "DELETE", "/users/me/totp", token, code.as_deref()).await, case).await;
        }
        assert_invalid_grant(app.login("johndoe", "secret").await, "One-time code required", "kept").await;

        let (status, body) =
            status_and_json(call(&app, "DELETE", "/users/me/totp", token, Some(&code(&secret, step + 1))).await).await;
        assert_eq!((status, body), (200, json!({"status": "removed"})));
        assert_logged_in(app.login("johndoe", "secret").await, "removed").await;
        assert_incorrect_code(
            call(&app, "DELETE", "/users/me/totp", token, Some(&code(&secret, step + 1))).await,
            "nothing left to remove",
        )
        .await;
    }

    #[tokio::test]
    async fn the_totp_routes_refuse_bad_tokens_as_users_me_does() {
        let app = spawn_app().await;
        let alice = app.token_for("alice", "secret2", "").await;
        for (method, path) in [
            ("POST", "/users/me/totp"),
            ("POST", "/users/me/totp/confirm"),
            ("DELETE", "/users/me/totp"),
        ] {
            let case = format!("{method} {path}");
            let response = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()["www-authenticate"], "Bearer", "{case}");
            let (status, body) = status_and_json(response).await;
            assert_eq!((status, body), (401, json!({"detail": "Not authenticated"})), "{case}");

            let response = call(&app, method, path, "not-a-real-token", Some("123456")).await;
            assert_eq!(
                response.headers()["www-authenticate"],
                r#"Bearer error="invalid_token""#,
                "{case}"
            );
            assert_eq!(response.status(), 401, "{case}");

            let (status, body) = status_and_json(call(&app, method, path, &alice, Some("123456")).await).await;
            assert_eq!((status, body), (400, json!({"detail": "Inactive user"})), "{case}");
        }
    }

    #[tokio::test]
    async fn the_cli_enables_and_disables_and_the_listings_say_who_has_one() {
        let app = spawn_app().await;
        let uri = enable_on_cli(&app, "johndoe");
        assert!(
            uri.starts_with("otpauth://totp/127.0.0.1:johndoe?") && uri.contains("issuer=127.0.0.1"),
            "{uri}"
        );
        let list = app.cli(&["users", "list"]).assert().success();
        let list = String::from_utf8(list.get_output().stdout.clone()).unwrap();
        let row = |name: &str| {
            list.lines()
                .find(|line| line.starts_with(name))
                .unwrap_or_default()
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned()
        };
        assert!(list.lines().next().unwrap().ends_with("TOTP"), "{list}");
        assert_eq!((row("johndoe"), row("alice")), ("yes".into(), "no".into()), "{list}");
        app.cli(&["users", "show", "johndoe"])
            .assert()
            .success()
            .stdout(predicates::str::contains("totp:      yes"));

        app.cli(&["users", "totp", "disable", "johndoe"])
            .assert()
            .success()
            .stdout("removed the second factor of johndoe\n");
        assert_logged_in(app.login("johndoe", "secret").await, "disabled on the CLI").await;
        // Enrolled over HTTP but not confirmed: pending.
        let token = app.token_for("johndoe", "secret", "").await;
        assert_eq!(call(&app, "POST", "/users/me/totp", &token, None).await.status(), 200);
        app.cli(&["users", "show", "johndoe"])
            .assert()
            .success()
            .stdout(predicates::str::contains("totp:      pending"));

        for args in [
            &["users", "totp", "enable", "nobody"][..],
            &["users", "totp", "disable", "nobody"],
        ] {
            let failed = app.cli(args).assert().failure().code(1);
            let output = failed.get_output();
            assert!(output.stdout.is_empty(), "{args:?}");
            assert_eq!(
                String::from_utf8_lossy(&output.stderr),
                "error: no user named \"nobody\"\n",
                "{args:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_user_with_a_second_factor_costs_one_password_check_like_an_unknown_user() {
    let app = spawn_app().await;
    let secret = secret_of(&enable_on_cli(&app, "johndoe"));
    let step = step_for_a_sequence().await;
    let jobs = || app.auth.password_hash_jobs();

    for (case, username, password, totp) in [
        ("an unknown user", "nobody", "secret123456".to_owned(), None),
        ("a wrong password", "johndoe", "wrong".to_owned(), None),
        (
            "a wrong password and six digits",
            "johndoe",
            "wrong123456".to_owned(),
            None,
        ),
        (
            "a wrong password and a right code",
            "johndoe",
            "wrong".to_owned(),
            Some(code(&secret, step)),
        ),
        ("the password alone", "johndoe", "secret".to_owned(), None),
        (
            "the code appended",
            "johndoe",
            format!("secret{}", code(&secret, step)),
            None,
        ),
    ] {
        let before = jobs();
        let mut form = vec![("username", username.to_owned()), ("password", password)];
        form.extend(totp.map(|totp| ("totp", totp)));
        app.post("/token").form(&form).send().await.unwrap();
        assert_eq!(jobs() - before, 1, "{case}");
    }
}

/// On a terminal, `users totp enable` draws the URI as a QR code above it (run under
/// `script`, which gives the command a pseudo-terminal).
#[tokio::test]
async fn on_a_terminal_the_cli_draws_a_qr_code() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        say_skipped(
            "the QR code test",
            "no `script` command to give the CLI a terminal",
        );
        return;
    }
    let app = spawn_app().await;
    let command = format!(
        "{} users totp enable johndoe",
        env!("CARGO_BIN_EXE_simple-oauth2")
    );
    let output = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DATABASE_URL", &app.database.url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("script runs");
    assert!(output.status.success());
    let shown = String::from_utf8(output.stdout).unwrap();
    let drawn = shown
        .lines()
        .filter(|line| line.contains('▄') || line.contains('▀'))
        .count();
    assert!(drawn > 10, "{shown}");
    let uri = shown
        .lines()
        .find(|line| line.starts_with("otpauth://totp/127.0.0.1:johndoe?"))
        .unwrap_or_else(|| panic!("the URI under the code: {shown}"));
    let step = step_now().await;
    assert_logged_in(
        login_with_code(&app, "secret", &code(&secret_of(uri.trim_end()), step)).await,
        "the drawn secret",
    )
    .await;
}

#[tokio::test]
async fn the_uri_label_names_the_issuer_host_without_scheme_or_port() {
    let app = spawn_app().await;
    let done = app
        .cli(&["users", "totp", "enable", "johndoe"])
        .env("ISSUER", "https://auth.example.com:8443/")
        .assert()
        .success();
    let uri = String::from_utf8(done.get_output().stdout.clone()).unwrap();
    assert!(
        uri.starts_with("otpauth://totp/auth.example.com:johndoe?")
            && uri.trim_end().ends_with("&issuer=auth.example.com"),
        "{uri}"
    );
    let done = app
        .cli(&["users", "totp", "enable", "johndoe"])
        .env_remove("ISSUER")
        .env("HOST", "localhost")
        .env("PORT", "9999")
        .assert()
        .success();
    let uri = String::from_utf8(done.get_output().stdout.clone()).unwrap();
    assert!(
        uri.starts_with("otpauth://totp/localhost:johndoe?"),
        "{uri}"
    );

    // Over HTTP, the server's own issuer names it the same way.
    let app =
        spawn_app_with(|settings| settings.issuer = Some("https://auth.example.com".into())).await;
    let token = app.token_for("johndoe", "secret", "").await;
    let (_, body) = status_and_json(call(&app, "POST", "/users/me/totp", &token, None).await).await;
    let uri = body["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/auth.example.com:johndoe?"),
        "{uri}"
    );
}

#[tokio::test]
async fn a_code_used_on_one_replica_is_refused_on_the_other() {
    on_backend(Backend::Postgres, async {
        let database = TestDatabase::new().await;
        let first = ServerProcess::start(&database.url, &[]);
        let second = ServerProcess::start(&database.url, &[]);
        let client = Client::new();
        let login = |replica: &ServerProcess, totp: Option<String>| {
            let mut form = vec![
                ("username", "johndoe".to_owned()),
                ("password", "secret".to_owned()),
            ];
            form.extend(totp.map(|totp| ("totp", totp)));
            let request = client
                .post(format!("{}/token", replica.address))
                .form(&form);
            async move { status_and_json(request.send().await.unwrap()).await }
        };

        // Enrolled and confirmed on the first replica: required on the second at once.
        let (_, body) = login(&first, None).await;
        let token = body["access_token"].as_str().unwrap().to_owned();
        let enrol = |path: &str, code: Option<String>| {
            let mut request = client
                .post(format!("{}{path}", first.address))
                .bearer_auth(&token);
            if let Some(code) = code {
                request = request.form(&[("code", code)]);
            }
            async move { status_and_json(request.send().await.unwrap()).await }
        };
        let (status, body) = enrol("/users/me/totp", None).await;
        assert_eq!(status, 200);
        let secret = body["secret"].as_str().unwrap().to_owned();
        let step = step_for_a_sequence().await;
        assert_eq!(
            enrol("/users/me/totp/confirm", Some(code(&secret, step - 1)))
                .await
                .0,
            200
        );
        let (status, body) = login(&second, None).await;
        assert_eq!(
            (status, &body["detail"]),
            (400, &json!("One-time code required"))
        );

        // The same code sent to both replicas at once: one login, on one of them.
        let now = code(&secret, step);
        let attempts =
            (0..6).map(|n| login(if n % 2 == 0 { &first } else { &second }, Some(now.clone())));
        let statuses: Vec<u16> = join_all(attempts)
            .await
            .into_iter()
            .map(|(status, _)| status)
            .collect();
        assert_eq!(
            statuses.iter().filter(|&&s| s == 200).count(),
            1,
            "{statuses:?}"
        );

        for replica in [&first, &second] {
            let (status, body) = login(replica, Some(now.clone())).await;
            assert_eq!(
                (status, &body["detail"]),
                (400, &json!("Incorrect one-time code")),
                "replayed"
            );
        }
        let (status, _) = login(&second, Some(code(&secret, step + 1))).await;
        assert_eq!(status, 200);
        let (status, body) = login(&first, Some(code(&secret, step + 1))).await;
        assert_eq!(
            (status, &body["detail"]),
            (400, &json!("Incorrect one-time code")),
            "replayed on the other"
        );
    })
    .await;
}

/// A real authenticator's view: Python's `pyotp` reads the URI `users totp enable` prints
/// and computes a code that logs in.
#[tokio::test]
async fn pyotp_reads_the_printed_uri_and_its_code_logs_in() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import pyotp"])
        .output();
    if !probe.is_ok_and(|output| output.status.success()) {
        assert!(
            std::env::var("REQUIRE_PYTHON_TESTS").as_deref() != Ok("1"),
            "pyotp is required (REQUIRE_PYTHON_TESTS=1) but `python3 -c 'import pyotp'` fails"
        );
        say_skipped(
            "the pyotp test",
            "python3 cannot import pyotp; `pip install pyotp` to run it",
        );
        return;
    }
    let app = spawn_app().await;
    let uri = enable_on_cli(&app, "johndoe");
    step_now().await;
    let script = "import sys, pyotp\n\
                  otp = pyotp.parse_uri(sys.argv[1])\n\
                  print(otp.issuer, otp.name, otp.digits, otp.interval, otp.now())";
    let output = std::process::Command::new("python3")
        .args(["-c", script, &uri])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    let fields: Vec<&str> = printed.split_whitespace().collect();
    assert_eq!(
        &fields[..4],
        ["127.0.0.1", "johndoe", "6", "30"],
        "{printed}"
    );
    assert_logged_in(
        login_with_code(&app, "secret", fields[4]).await,
        "pyotp's code",
    )
    .await;
}

#[tokio::test]
async fn the_totp_operations_are_documented_with_every_status() {
    let app = spawn_app().await;
    let spec: Value = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method, statuses) in [
        (
            "/users/me/totp",
            "post",
            &["200", "400", "401", "409", "503"][..],
        ),
        (
            "/users/me/totp/confirm",
            "post",
            &["200", "400", "401", "408", "409", "413", "429", "503"],
        ),
        (
            "/users/me/totp",
            "delete",
            &["200", "400", "401", "408", "413", "429", "503"],
        ),
    ] {
        let operation = &spec["paths"][path][method];
        let documented: Vec<&str> = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is documented"))
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(documented, statuses, "{method} {path}");
        assert!(
            operation["security"].is_array(),
            "{method} {path} needs a token"
        );
    }
    let token_form = &spec["components"]["schemas"]["TokenRequest"]["properties"];
    assert!(
        token_form["totp"].is_object(),
        "the token form documents totp"
    );
}

/// The value of one series of the app's metrics (`0` when it is not there yet).
async fn metric(app: &TestApp, series: &str) -> f64 {
    let address = app.metrics_address.as_ref().expect("METRICS_ADDR is set");
    let text = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_metrics_count_second_factor_outcomes() {
    let app = spawn_app_with(|settings| settings.metrics_addr = Some("127.0.0.1:0".into())).await;
    let secret = secret_of(&enable_on_cli(&app, "johndoe"));
    let step = step_for_a_sequence().await;
    let logins = |outcome: &str| format!("simple_oauth2_logins_total{{outcome=\"{outcome}\"}}");
    let second =
        |outcome: &str| format!("simple_oauth2_second_factor_total{{outcome=\"{outcome}\"}}");

    app.login("johndoe", "secret").await;
    login_with_code(&app, "secret", &wrong_code(&secret, step)).await;
    let body = assert_logged_in(
        login_with_code(&app, "secret", &code(&secret, step)).await,
        "right",
    )
    .await;
    let token = body["access_token"].as_str().unwrap();
    call(
        &app,
        "DELETE",
        "/users/me/totp",
        token,
        Some(&code(&secret, step + 1)),
    )
    .await;
    call(&app, "POST", "/users/me/totp", token, None).await;

    for (series, expected) in [
        (logins("second_factor_required"), 1.0),
        (logins("second_factor_failed"), 1.0),
        (logins("issued"), 1.0),
        (second("required"), 1.0),
        (second("incorrect_code"), 1.0),
        (second("passed"), 1.0),
        (second("removed"), 1.0),
        (second("pending"), 1.0),
    ] {
        assert_eq!(metric(&app, &series).await, expected, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_name_the_user_and_no_log_holds_a_secret_or_a_code() {
    let database = TestDatabase::new().await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let mut command = ServerProcess::command(
        ServerProcess::BINARY,
        &database.url,
        &[("LOG_FORMAT", "json")],
    );
    command
        .env("RUST_LOG", "trace")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let server = ServerProcess::spawn(command);
    let base = server.address.clone();
    let client = Client::new();
    let post = |path: &str, form: Vec<(&'static str, String)>| {
        client.post(format!("{base}{path}")).form(&form).send()
    };
    let login = |totp: Option<String>| {
        let mut form = vec![
            ("username", "johndoe".to_owned()),
            ("password", "secret".to_owned()),
        ];
        form.extend(totp.map(|totp| ("totp", totp)));
        post("/token", form)
    };

    let body: Value = login(None).await.unwrap().json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let enrolment: Value = client
        .post(format!("{base}/users/me/totp"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let step = step_for_a_sequence().await;
    let codes = [
        code(&secret, step - 1),
        code(&secret, step),
        code(&secret, step + 1),
    ];
    let confirmed = client
        .post(format!("{base}/users/me/totp/confirm"))
        .bearer_auth(&token)
        .form(&[("code", &codes[0])])
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), 200);
    let wrong = wrong_code(&secret, step);
    assert_eq!(login(Some(wrong.clone())).await.unwrap().status(), 400);
    assert_eq!(login(Some(codes[1].clone())).await.unwrap().status(), 200);
    let removed = client
        .delete(format!("{base}/users/me/totp"))
        .bearer_auth(&token)
        .form(&[("code", &codes[2])])
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    let cli = |args: &[&str]| {
        assert_cmd::Command::new(ServerProcess::BINARY)
            .env("DATABASE_URL", &database.url)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "trace")
            .args(args)
            .assert()
            .success()
    };
    let enabled = cli(&["users", "totp", "enable", "johndoe"]);
    let printed = String::from_utf8(enabled.get_output().stdout.clone()).unwrap();
    let cli_secret = secret_of(printed.trim());
    let disabled = cli(&["users", "totp", "disable", "johndoe"]);
    drop(server);

    let mut log = std::fs::read_to_string(&log_path).unwrap();
    log += &String::from_utf8_lossy(&enabled.get_output().stderr);
    log += &String::from_utf8_lossy(&disabled.get_output().stderr);
    let events: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "audit")
        .map(|line| line["fields"].clone())
        .collect();
    let named = |event: &str, source: Option<&str>| {
        events.iter().any(|fields| {
            fields["event"] == event
                && fields["username"] == "johndoe"
                && source.is_none_or(|source| fields["source"] == source)
        })
    };
    assert!(named("totp.enrolled", Some("api")), "{log}");
    assert!(named("login.second_factor_failed", None), "{log}");
    assert!(named("totp.removed", Some("api")), "{log}");
    assert!(named("totp.enrolled", Some("cli")), "{log}");
    assert!(named("totp.removed", Some("cli")), "{log}");
    for secret in [&secret, &cli_secret] {
        assert!(
            !log.contains(secret.as_str()),
            "a TOTP secret reached a log"
        );
    }
    for code in codes.iter().chain([&wrong]) {
        assert!(
            !log.contains(&format!("\"{code}\"")),
            "a code reached a log"
        );
        assert!(!log.contains(&format!("={code}")), "a code reached a log");
    }
}
