//! Reliability: many clients at once, a killed process, a graceful stop, a full disk.

use std::{path::Path, sync::Arc, time::Duration};

use futures_util::{StreamExt, future::join_all, stream::FuturesUnordered};
use reqwest::Client;
use serde_json::Value;

use crate::helpers::{
    ServerProcess, TestDatabase, assert_unavailable, say_skipped, spawn_app_on, spawn_app_with,
};

async fn login(client: &Client, address: &str) -> Result<(u16, Option<String>), reqwest::Error> {
    let response = client
        .post(format!("{address}/token"))
        .form(&[("username", "johndoe"), ("password", "secret")])
        .send()
        .await?;
    let status = response.status().as_u16();
    let body: Value = response.json().await?;
    Ok((status, body["access_token"].as_str().map(str::to_owned)))
}

async fn me_status(client: &Client, address: &str, token: &str) -> u16 {
    client
        .get(format!("{address}/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

async fn assert_database_is_intact(db_path: &Path) {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", db_path.display()))
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("pragma integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let users: Vec<(String, bool, String)> =
        sqlx::query_as("select username, disabled, hashed_password from users order by username")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!((users[0].0.as_str(), users[0].1), ("alice", true));
    assert_eq!((users[1].0.as_str(), users[1].1), ("johndoe", false));
    assert!(users.iter().all(|u| u.2.starts_with("$argon2id$")));
}

/// A tiny tmpfs, unmounted on drop; `None` where mounting is not allowed.
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Self { dir })
    }

    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.flush();
        path
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        // Lazy, so a test that failed with files still open leaves no mount behind.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_gives_503_and_the_service_recovers_when_space_returns() {
    let Some(disk) = TinyDisk::mount() else {
        say_skipped(
            "full-disk test",
            "cannot mount a tmpfs here; it needs root (CI runs it)",
        );
        return;
    };
    let holder = tempfile::tempdir().unwrap();
    let database = TestDatabase::sqlite_file(holder, disk.dir.path().join("full.db"));
    let app = spawn_app_on(Arc::new(database), |_| {}).await;
    let token = app.token_for("johndoe", "secret", "").await;

    let filler = disk.fill();
    assert_unavailable(app.get("/health").send().await.unwrap()).await;
    for _ in 0..3 {
        let body = assert_unavailable(app.login("johndoe", "secret").await).await;
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    let status = app.get_with_token("/users/me", &token).await.status();
    assert!(status == 200 || status == 503, "/users/me got {status}");

    std::fs::remove_file(filler).unwrap();
    assert_eq!(app.get("/health").send().await.unwrap().status(), 200);
    assert_eq!(app.login("johndoe", "secret").await.status(), 200);
    assert_eq!(app.get_with_token("/users/me", &token).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_read_only_database_gives_503_for_writes_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("ro.db");
    let database = Arc::new(TestDatabase::sqlite_file(dir, db_path.clone()));
    let writable = spawn_app_on(database.clone(), |_| {}).await;
    let token = writable.token_for("johndoe", "secret", "").await;
    writable.stop().await;

    // The same file, opened read-only, as after a remount or a change of permissions.
    let read_only_url = format!("sqlite:{}?mode=ro", db_path.display());
    let read_only = TestDatabase::sqlite_url(tempfile::tempdir().unwrap(), read_only_url, db_path);
    let app = spawn_app_on(Arc::new(read_only), |_| {}).await;

    for response in [
        app.get("/health").send().await.unwrap(),
        app.login("johndoe", "secret").await,
        app.revoke(&token).await,
    ] {
        assert_unavailable(response).await;
    }
    assert_eq!(app.get_with_token("/users/me", &token).await.status(), 200);
}

both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_logins_reads_and_revocations_never_fail_on_the_database() {
        // Every login must stay live: no session may be ended by the per-user cap.
        let app = spawn_app_with(|s| s.max_sessions_per_user = 1000).await;
        let seed_tokens: Vec<String> =
            join_all((0..20).map(|_| app.token_for("johndoe", "secret", ""))).await;
        let (to_revoke, to_keep) = seed_tokens.split_at(10);

        let logins = join_all((0..200).map(|_| login(&app.client, &app.address)));
        let reads = join_all((0..2000).map(|i| {
            let token = &seed_tokens[i % seed_tokens.len()];
            me_status(&app.client, &app.address, token)
        }));
        let revocations = join_all(to_revoke.iter().map(|token| app.revoke(token)));
        let (logins, reads, revocations) = tokio::join!(logins, reads, revocations);

        let mut issued = Vec::new();
        for result in logins {
            let (status, token) = result.expect("login answered");
            assert_eq!(status, 200);
            issued.push(token.expect("a token"));
        }
        for status in reads {
            assert!(status == 200 || status == 401, "a read got {status}");
        }
        for response in revocations {
            assert_eq!(response.status(), 200);
        }
        for token in issued.iter().chain(to_keep) {
            assert_eq!(me_status(&app.client, &app.address, token).await, 200);
        }
        for token in to_revoke {
            assert_eq!(me_status(&app.client, &app.address, token).await, 401);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_server_restarts_with_every_answered_token_and_user_intact() {
        let database = TestDatabase::new().await;
        let server = ServerProcess::start(&database.url, &[]);
        let client = Client::new();

        // Eight clients log in over and over; the server is killed in the middle.
        let address = server.address.clone();
        let load = tokio::spawn({
            let client = client.clone();
            async move {
                let clients = (0..8).map(|_| {
                    let client = client.clone();
                    let address = address.clone();
                    async move {
                        let mut tokens = Vec::new();
                        while let Ok((200, Some(token))) = login(&client, &address).await {
                            tokens.push(token);
                        }
                        tokens
                    }
                });
                join_all(clients).await.concat()
            }
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(server); // SIGKILL
        let answered = load.await.unwrap();
        assert!(
            !answered.is_empty(),
            "no login was answered before the kill"
        );

        let restarted = ServerProcess::start(&database.url, &[]);
        for token in &answered {
            assert_eq!(me_status(&client, &restarted.address, token).await, 200);
        }
        assert_eq!(
            login(&client, &restarted.address).await.unwrap().0,
            200,
            "the seeded user still logs in"
        );
        drop(restarted);
        if let Some(db_path) = &database.sqlite_path {
            assert_database_is_intact(db_path).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_lets_accepted_requests_finish_then_exits_0() {
        let database = TestDatabase::new().await;
        let mut server = ServerProcess::start(&database.url, &[]);
        let client = Client::new();

        // Sixteen logins queue behind the hashing limit: several hundred ms of work. The
        // signal goes once the first is answered, when all are surely being handled.
        let address = server.address.clone();
        let (first_answered, answered) = tokio::sync::oneshot::channel();
        let in_flight = tokio::spawn(async move {
            let mut logins: FuturesUnordered<_> =
                (0..16).map(|_| login(&client, &address)).collect();
            let mut results = Vec::new();
            let mut first_answered = Some(first_answered);
            while let Some(result) = logins.next().await {
                if let Some(first) = first_answered.take() {
                    let _ = first.send(());
                }
                results.push(result);
            }
            results
        });
        answered.await.unwrap();
        server.signal(libc::SIGTERM);

        let results = in_flight.await.unwrap();
        assert_eq!(results.len(), 16);
        for result in results {
            let (status, _) = result
                .map_err(|e| format!("{e:?}"))
                .expect("an accepted request is answered");
            assert_eq!(status, 200);
        }
        let status = tokio::task::spawn_blocking(move || {
            let status = server.child.wait();
            (status, server)
        })
        .await
        .unwrap();
        assert!(status.0.unwrap().success(), "exit status");
        let refused = Client::new()
            .get(format!("{}/health", status.1.address))
            .send()
            .await;
        assert!(
            refused.is_err(),
            "new connections are refused after shutdown"
        );
    }
}
