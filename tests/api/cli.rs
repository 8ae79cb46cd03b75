//! Managing users with the binary's subcommands, while the server runs on the same file.

use predicates::prelude::*;
use serde_json::json;

use crate::helpers::{TestApp, spawn_app, status_and_json};

/// Every user row, hashes included: to show that a failed command changed nothing.
async fn user_rows(app: &TestApp) -> Vec<String> {
    app.sql_strings(
        "select concat_ws('|', username, coalesce(email, ''), case when disabled then 'yes' else 'no' end,
                scopes, hashed_password)
         from users order by username",
    )
    .await
}

fn add_bob(app: &TestApp) {
    app.cli(&[
        "users",
        "add",
        "bob",
        "--email",
        "bob@example.com",
        "--full-name",
        "Bob Builder",
        "--scopes",
        "me items",
        "--password-stdin",
    ])
    .write_stdin("can-we-fix-it\n")
    .assert()
    .success();
}

both_backends! {
    #[tokio::test]
    async fn an_added_user_can_log_in_over_http() {
        let app = spawn_app().await;
        add_bob(&app);

        let token = app.token_for("bob", "can-we-fix-it", "items").await;
        let (status, body) = status_and_json(app.get_with_token("/users/me", &token).await).await;

        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"username": "bob", "email": "bob@example.com", "full_name": "Bob Builder", "disabled": false})
        );
        assert_eq!(
            app.get_with_token("/users/me/items", &token).await.status(),
            200
        );
    }

    #[tokio::test]
    async fn disable_and_enable_take_effect_on_live_tokens() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;
        assert_eq!(app.get_with_token("/users/me", &token).await.status(), 200);

        app.cli(&["users", "disable", "johndoe"]).assert().success();
        let status = app.status_after_outside_change("/users/me", &token, 400).await;
        assert_eq!(status, 400);
        let (status, body) = status_and_json(app.get_with_token("/users/me", &token).await).await;
        assert_eq!((status, body), (400, json!({"detail": "Inactive user"})));

        app.cli(&["users", "enable", "johndoe"]).assert().success();
        let status = app.status_after_outside_change("/users/me", &token, 200).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn set_password_revokes_tokens_and_replaces_the_password() {
        let app = spawn_app().await;
        let old_token = app.token_for("johndoe", "secret", "").await;
        assert_eq!(
            app.get_with_token("/users/me", &old_token).await.status(),
            200
        );

        app.cli(&["users", "set-password", "johndoe", "--password-stdin"])
            .write_stdin("a new secret\n")
            .assert()
            .success();

        let status = app.status_after_outside_change("/users/me", &old_token, 401).await;
        assert_eq!(status, 401);
        assert_eq!(app.login("johndoe", "secret").await.status(), 400);
        assert_eq!(app.login("johndoe", "a new secret").await.status(), 200);
    }

    #[tokio::test]
    async fn delete_removes_the_user_and_their_tokens() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;

        app.cli(&["users", "delete", "johndoe"]).assert().success();

        assert_eq!(app.login("johndoe", "secret").await.status(), 400);
        let status = app.status_after_outside_change("/users/me", &token, 401).await;
        assert_eq!(status, 401);
        let tokens = app.sql_i64("select count(*) from access_tokens").await;
        assert_eq!(tokens, 0);
    }

    #[tokio::test]
    async fn set_scopes_changes_what_a_login_is_granted() {
        let app = spawn_app().await;

        app.cli(&["users", "set-scopes", "alice", "me items"])
            .assert()
            .success();

        let (_, body) =
            status_and_json(app.login_with_scope("alice", "secret2", "me items").await).await;
        assert_eq!(body["scope"], "me items");
    }

    #[tokio::test]
    async fn list_and_show_never_print_hashes() {
        let app = spawn_app().await;

        let list = app.cli(&["users", "list"]).assert().success();
        let out = String::from_utf8(list.get_output().stdout.clone()).unwrap();
        assert!(out.starts_with("USERNAME"), "{out}");
        assert!(out.contains("alice") && out.contains("johndoe@example.com"));
        assert!(!out.contains("$argon2"));

        app.cli(&["users", "show", "alice"])
            .assert()
            .success()
            .stdout(
                predicate::str::contains("Alice Wonderson")
                    .and(predicate::str::contains("$argon2").not()),
            );
    }

    #[tokio::test]
    async fn errors_exit_non_zero_with_one_line_and_change_nothing() {
        let app = spawn_app().await;
        let before = user_rows(&app).await;
        let cases: [(&[&str], &str); 8] = [
            (&["users", "add", "johndoe", "--password-stdin"], "x\n"),
            (&["users", "add", "carol", "--password-stdin"], "\n"),
            (
                &[
                    "users",
                    "add",
                    "carol",
                    "--scopes",
                    "admin",
                    "--password-stdin",
                ],
                "x\n",
            ),
            (&["users", "add", "", "--password-stdin"], "x\n"),
            (&["users", "disable", "nobody"], ""),
            (&["users", "delete", "nobody"], ""),
            (
                &["users", "set-password", "nobody", "--password-stdin"],
                "x\n",
            ),
            (&["users", "set-scopes", "alice", "me admin"], ""),
        ];

        for (args, stdin) in cases {
            let assert = app.cli(args).write_stdin(stdin).assert().failure();
            let stderr = String::from_utf8(assert.get_output().stderr.clone()).unwrap();
            assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        }

        assert_eq!(user_rows(&app).await, before);
    }

    #[tokio::test]
    async fn listings_escape_control_characters_in_every_field() {
        let app = spawn_app().await;
        app.sql_execute(
            "update users set full_name = $1, email = $2 where username = 'johndoe'",
            &["John\r\nalice  evil@example.com  forged", "j\x1b[2J@example.com"],
        )
        .await;
        app.cli(&["clients", "add", "svc"]).assert().success();
        app.sql_execute(
            "update clients set client_id = $1 where client_id = 'svc'",
            &["svc\x1b]0;title\x07\nforged"],
        )
        .await;
        let token = app.token_for("johndoe", "secret", "").await;
        assert!(!token.is_empty());
        app.sql_execute("update sessions set client_id = $1", &["app\r\x1b[1Aup"])
            .await;

        for (args, lines) in [
            (&["users", "list"][..], 3),
            (&["users", "show", "johndoe"], 6),
            (&["users", "sessions", "johndoe"], 2),
            (&["clients", "list"], 2),
        ] {
            let assert = app.cli(args).assert().success();
            let out = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
            assert!(!out.contains(['\r', '\x1b', '\x07']), "{args:?}: {out:?}");
            assert_eq!(out.lines().count(), lines, "{args:?}: {out}");
        }
        let show = app.cli(&["users", "show", "johndoe"]).assert().success();
        let out = String::from_utf8(show.get_output().stdout.clone()).unwrap();
        assert!(out.contains(r"John\r\nalice  evil@example.com  forged"), "{out}");
        assert!(out.contains(r"j\u{1b}[2J@example.com"), "{out}");
    }

    #[tokio::test]
    async fn hash_password_prints_a_phc_string_that_logs_in() {
        let app = spawn_app().await;
        let out = app
            .cli(&["hash-password", "--password-stdin"])
            .write_stdin("hunter2\n")
            .assert()
            .success();
        let phc = String::from_utf8(out.get_output().stdout.clone()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");

        app.sql_execute(
            "update users set hashed_password = $1 where username = 'johndoe'",
            &[phc.trim()],
        )
        .await;

        assert_eq!(app.login("johndoe", "hunter2").await.status(), 200);
    }

    #[tokio::test]
    async fn migrate_creates_and_migrates_a_new_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");

        assert_cmd::Command::new(env!("CARGO_BIN_EXE_simple-oauth2"))
            .env("DATABASE_URL", format!("sqlite:{}", path.display()))
            .arg("migrate")
            .assert()
            .success();
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_simple-oauth2"))
            .env("DATABASE_URL", format!("sqlite:{}", path.display()))
            .args(["users", "show", "johndoe"])
            .assert()
            .success()
            .stdout(predicate::str::contains("John Doe"));
    }
}
