//! What an outside security review attacked: bodies over HTTP/2, the throttle's limits,
//! slow and idle clients, running out of descriptors, secrets in logs, framing of the
//! docs, doubled headers, file permissions and the token cache's freshness.

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, future::join_all, stream};
use serde_json::{Value, json};

use crate::helpers::{
    ServerProcess, TestDatabase, spawn_app, spawn_app_on, spawn_app_with, status_and_json,
};

/// The peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// User plus system CPU time a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_without_a_length_is_capped_while_it_is_read() {
    let database = TestDatabase::new().await;
    let server = ServerProcess::start(&database.url, &[]);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // 200 MiB, streamed: an HTTP/2 request with neither Content-Length nor chunking.
    let chunk = bytes::Bytes::from(vec![b'a'; 1 << 20]);
    let body = stream::iter((0..200).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));

    let answer = client
        .post(format!("{}/token/revoke", server.address))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;

    // A 413, or the stream reset once the limit is passed: never a read to the end.
    match answer {
        Ok(response) => {
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            assert_eq!(response.status(), 413);
        }
        Err(err) => assert!(
            !err.is_connect(),
            "the request never reached the server: {err}"
        ),
    }
    let peak = peak_rss_kib(server.child.id());
    assert!(
        peak < 64 * 1024,
        "peak memory {peak} KiB grew with the body"
    );
    // HTTP/2 still works for everything else.
    let response = client
        .post(format!("{}/token", server.address))
        .form(&[("username", "johndoe"), ("password", "secret")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_or_sends_nothing_is_cut_off() {
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://").to_owned();

    let waits = ["GET /health HTTP/1.1\r\nHost: x\r\n", ""].map(|sent| {
        let address = address.clone();
        tokio::task::spawn_blocking(move || {
            let mut socket = TcpStream::connect(&address).unwrap();
            socket.write_all(sent.as_bytes()).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let started = Instant::now();
            let mut buffer = [0u8; 512];
            // Closed (0 bytes or a reset), not answered: the request never completed.
            let read = socket.read(&mut buffer).unwrap_or(0);
            (read, started.elapsed())
        })
    });

    for wait in waits {
        let (read, waited) = wait.await.unwrap();
        assert_eq!(read, 0, "closed, not answered");
        assert!(
            waited >= Duration::from_secs(8) && waited <= Duration::from_secs(15),
            "closed after {waited:?}"
        );
    }
    // Everyone else is served as before.
    assert_eq!(app.get("/health").send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_waits_instead_of_spinning_and_recovers() {
    let database = TestDatabase::new().await;
    let mut command = ServerProcess::command("prlimit", &database.url, &[]);
    command.args(["--nofile=128:128", ServerProcess::BINARY]);
    let server = ServerProcess::spawn(command);
    let address = server.address.trim_start_matches("http://").to_owned();
    let pid = server.child.id();

    // More idle connections than the process has descriptors.
    let idle: Vec<TcpStream> = (0..180)
        .filter_map(|_| TcpStream::connect(&address).ok())
        .collect();
    assert!(idle.len() > 128, "only {} connections opened", idle.len());
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - before;
    // A busy accept loop burns 2 s of CPU (about 200 ticks) here.
    assert!(
        used < 40,
        "{used} ticks of CPU in 2 s while out of descriptors"
    );

    drop(idle);
    let client = reqwest::Client::new();
    let started = Instant::now();
    let health = client
        .get(format!("http://{address}/health"))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("served again once the idle connections are gone");
    assert_eq!(health.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test]
async fn two_authorization_headers_are_an_invalid_request() {
    let app = spawn_app().await;
    let token = app.token_for("johndoe", "secret", "").await;

    let response = app
        .get("/users/me")
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", "Bearer someone-elses")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_request""#
    );
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].is_string());
}

#[tokio::test]
async fn the_docs_page_cannot_be_framed_and_is_compressed() {
    let app = spawn_app().await;

    let plain = app.get("/docs").send().await.unwrap();
    let gzipped = app
        .get("/docs")
        .header("accept-encoding", "gzip, deflate")
        .send()
        .await
        .unwrap();

    for response in [&plain, &gzipped] {
        let headers = response.headers();
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let html = plain.bytes().await.unwrap();
    let compressed = gzipped.bytes().await.unwrap();
    assert!(
        compressed.len() * 2 < html.len(),
        "gzip halves the page at least"
    );
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, html);
    // Every other answer says nosniff too.
    let health = app.get("/health").send().await.unwrap();
    assert_eq!(health.headers()["x-content-type-options"], "nosniff");
}

#[cfg(unix)]
#[tokio::test]
async fn a_database_file_readable_by_others_is_made_private_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let database = Arc::new(TestDatabase::on(crate::helpers::Backend::Sqlite).await);
    spawn_app_on(database.clone(), |_| {}).await.stop().await;
    let path = database.sqlite_path.clone().unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();

    let _app = spawn_app_on(database, |_| {}).await;

    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// The server's SQLite writer never checkpoints (no commit waits for the disk behind
/// one): the server moves the write-ahead log into the database file itself, so what it
/// wrote reaches the file within seconds, whatever the log holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_checkpoints_what_it_writes_into_the_sqlite_file() {
    let database = Arc::new(TestDatabase::on(crate::helpers::Backend::Sqlite).await);
    let app = spawn_app_on(database.clone(), |_| {}).await;
    let (_, refresh) = app.tokens_for("johndoe", "secret", "").await;
    assert_eq!(app.refresh(&refresh, None).await.status(), 200);
    let path = database.sqlite_path.clone().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let copy = copies.path().join("file-alone.db");
    let mut refresh_rows = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The file alone, without its -wal: only what was checkpointed.
        std::fs::copy(&path, &copy).unwrap();
        let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", copy.display()))
            .await
            .unwrap();
        refresh_rows = sqlx::query_scalar::<_, i64>("select count(*) from refresh_tokens")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(copies.path().join(format!("file-alone.db{suffix}")));
        }
        if refresh_rows == 2 {
            break;
        }
    }
    assert_eq!(
        refresh_rows, 2,
        "the login's and the refresh's tokens, in the file itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_do_not_empty_the_token_cache() {
    let app = spawn_app().await;
    let token = app.token_for("johndoe", "secret", "").await;
    // Warm: the login's own writes have been read, and the cache answers.
    let started = Instant::now();
    loop {
        let before = app.auth.token_cache_stats().hits;
        assert_eq!(app.me_status(&token).await, 200);
        if app.auth.token_cache_stats().hits > before {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the cache never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let warm = app.auth.token_cache_stats();

    for _ in 0..10 {
        assert_eq!(app.get("/health").send().await.unwrap().status(), 200);
        assert_eq!(app.me_status(&token).await, 200);
    }

    let after = app.auth.token_cache_stats();
    assert_eq!(
        after.misses, warm.misses,
        "a health check emptied the cache"
    );
    assert_eq!(after.hits, warm.hits + 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spray_of_made_up_names_does_not_switch_the_username_limit_off() {
    // On SQLite only: the counting is the same code on both, and the spray is the
    // slowest test there is.
    let app = spawn_app_with(|s| s.login_max_failures_per_address = 0).await;

    // One more name than the in-memory throttle used to track.
    spray(&app, 0..50_001).await;
    for _ in 0..10 {
        assert_eq!(app.login("johndoe", "wrong").await.status(), 400);
    }

    let (status, body) = status_and_json(app.login("johndoe", "secret").await).await;
    assert_eq!(
        (status, &body["error"]),
        (429, &json!("temporarily_unavailable"))
    );
}

/// Logs in with a made-up name and a password too long to be hashed: what a spray of
/// names costs an attacker.
async fn spray(app: &crate::helpers::TestApp, names: std::ops::Range<usize>) {
    let long_password = "x".repeat(1100);
    let client = &app.client;
    stream::iter(names)
        .map(|i| {
            let form = [
                ("username", format!("made-up-{i}")),
                ("password", long_password.clone()),
            ];
            async move {
                let response = client
                    .post(app.url("/token"))
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 400);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

both_backends! {
    #[tokio::test]
    async fn a_restart_does_not_forget_failed_logins() {
        let database = Arc::new(TestDatabase::new().await);
        let first = spawn_app_on(database.clone(), |_| {}).await;
        for _ in 0..6 {
            assert_eq!(first.login("johndoe", "wrong").await.status(), 400);
        }
        first.stop().await;

        let second = spawn_app_on(database, |_| {}).await;
        for _ in 0..4 {
            assert_eq!(second.login("johndoe", "wrong").await.status(), 400);
        }

        assert_eq!(second.login("johndoe", "secret").await.status(), 429);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_guesses_are_counted_before_any_is_checked() {
        let app = spawn_app_with(|s| s.login_max_failures_per_address = 0).await;
        let jobs_before = app.auth.password_hash_jobs();

        let answers = join_all((0..40).map(|_| app.login("johndoe", "wrong"))).await;

        let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
        let checked = statuses.iter().filter(|&&s| s == 400).count();
        let throttled = statuses.iter().filter(|&&s| s == 429).count();
        assert_eq!((checked, throttled), (10, 30), "{statuses:?}");
        assert_eq!(app.auth.password_hash_jobs() - jobs_before, 10);
    }

}

both_backends! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_password_token_hash_or_database_password_reaches_a_log_at_trace() {
        let database = TestDatabase::new().await;
        // Trust authentication ignores the password, so it can be a marker here.
        let url = database.url.replacen("postgres@", "postgres:leaky-db-password@", 1);
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("server.log");
        let mut command = ServerProcess::command(ServerProcess::BINARY, &url, &[("RUST_LOG", "trace")]);
        command.stderr(std::fs::File::create(&log_path).unwrap());
        let server = ServerProcess::spawn(command);
        let base = server.address.clone();
        let http1 = reqwest::Client::new();
        let http2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();

        let cli = |args: &[&str], stdin: &str| {
            let output = assert_cmd::Command::new(ServerProcess::BINARY)
                .env("DATABASE_URL", &url)
                .env("RUST_LOG", "trace")
                .args(args)
                .write_stdin(stdin)
                .assert()
                .success()
                .get_output()
                .clone();
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        };
        let mut cli_output = cli(&["users", "add", "carol", "--scopes", "me items", "--password-stdin"], "correct-horse-battery\n");
        let login = |client: &reqwest::Client, form: Vec<(&'static str, String)>| {
            client.post(format!("{base}/token")).form(&form).send()
        };
        let wrong = login(&http1, vec![("username", "carol".into()), ("password", "wrong-password-123".into())])
            .await
            .unwrap();
        assert_eq!(wrong.status(), 400);
        let tokens: Value = login(&http2, vec![
            ("username", "carol".into()),
            ("password", "correct-horse-battery".into()),
            ("scope", "me items".into()),
        ])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let access = tokens["access_token"].as_str().unwrap().to_owned();
        let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
        for client in [&http1, &http2] {
            let me = client.get(format!("{base}/users/me")).bearer_auth(&access).send().await.unwrap();
            assert_eq!(me.status(), 200);
        }
        let in_query = http1.get(format!("{base}/users/me?access_token={access}")).send().await.unwrap();
        assert_eq!(in_query.status(), 401);
        let refreshed: Value = login(&http1, vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh.clone())])
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let new_refresh = refreshed["refresh_token"].as_str().unwrap().to_owned();
        let revoked = http1.post(format!("{base}/token/revoke")).form(&[("token", &new_refresh)]).send().await.unwrap();
        assert_eq!(revoked.status(), 200);
        cli_output += &cli(&["users", "set-password", "carol", "--password-stdin"], "another-long-secret\n");
        cli_output += &cli(&["migrate"], "");
        cli_output += &cli(&["hash-password", "--password-stdin"], "hash-me-please\n");
        drop(server);

        let log = std::fs::read_to_string(&log_path).unwrap() + &cli_output;
        assert!(log.lines().count() > 50, "trace logging was on:\n{log}");
        let seeded_hash = "eLHvfibJ2+A4BbZhPMKqRY6CUoeN6zva3ayLHkC";
        for secret in [
            "correct-horse-battery",
            "wrong-password-123",
            "another-long-secret",
            "leaky-db-password",
            seeded_hash,
            access.as_str(),
            refresh.as_str(),
            new_refresh.as_str(),
        ] {
            assert!(!log.contains(secret), "{secret:?} reached a log");
        }
        // Only hash-password's own output may show a hash: the one it was asked for.
        assert_eq!(log.matches("$argon2").count(), 1, "a password hash reached a log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_by_another_connection_counts_from_the_next_request() {
    let app = spawn_app().await;
    let token = app.token_for("johndoe", "secret", "").await;
    // Another process, as far as the app can tell: a pool of its own on the same file.
    let other = sqlx::SqlitePool::connect(&app.database.url).await.unwrap();

    for round in 0..30 {
        let disabled = round % 2 == 0;
        // Warm the cache, then change the user behind the app's back.
        let before = if disabled { 200 } else { 400 };
        assert_eq!(app.me_status(&token).await, before, "round {round}");
        assert_eq!(app.me_status(&token).await, before, "round {round}");
        sqlx::query("update users set disabled = $1 where username = 'johndoe'")
            .bind(disabled)
            .execute(&other)
            .await
            .unwrap();

        let after = if disabled { 400 } else { 200 };
        assert_eq!(app.me_status(&token).await, after, "round {round}");
    }
    other.close().await;
}
