//! Several replicas on one PostgreSQL database, as behind a load balancer: started at
//! once, sharing tokens, revocations and failed-login counts, one killed, the database
//! cut off (through a TCP proxy in the test) and restored.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use reqwest::Client;
use serde_json::Value;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

use crate::helpers::{
    Backend, ServerProcess, TestDatabase, assert_unavailable, on_backend, spawn_app_on,
    status_and_json,
};

/// Runs `test` on PostgreSQL, or says it was skipped.
async fn on_postgres(test: impl Future<Output = ()>) {
    on_backend(Backend::Postgres, test).await;
}

/// Starts `count` replicas on `database` at the same moment.
fn start_replicas(
    database: &TestDatabase,
    count: usize,
    envs: &[(&str, &str)],
) -> Vec<ServerProcess> {
    std::thread::scope(|scope| {
        let starting: Vec<_> = (0..count)
            .map(|_| scope.spawn(|| ServerProcess::start(&database.url, envs)))
            .collect();
        starting
            .into_iter()
            .map(|replica| replica.join().expect("a replica starts"))
            .collect()
    })
}

async fn login(client: &Client, replica: &ServerProcess, password: &str) -> (u16, Value) {
    let response = client
        .post(format!("{}/token", replica.address))
        .form(&[("username", "johndoe"), ("password", password)])
        .send()
        .await
        .expect("a replica answers");
    status_and_json(response).await
}

async fn me_status(client: &Client, replica: &ServerProcess, token: &str) -> u16 {
    client
        .get(format!("{}/users/me", replica.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("a replica answers")
        .status()
        .as_u16()
}

/// The status of `/users/me` on `replica` once it is `expected`, or after `within`.
async fn status_within(
    client: &Client,
    replica: &ServerProcess,
    token: &str,
    expected: u16,
    within: Duration,
) -> u16 {
    let started = Instant::now();
    loop {
        let status = me_status(client, replica, token).await;
        if status == expected || started.elapsed() >= within {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_at_once_migrate_once_and_share_tokens() {
    on_postgres(async {
        let database = TestDatabase::new().await;
        let replicas = start_replicas(&database, 3, &[]);
        let client = Client::new();

        let (status, body) = login(&client, &replicas[0], "secret").await;
        assert_eq!(status, 200);
        let token = body["access_token"].as_str().unwrap();
        for replica in &replicas {
            assert_eq!(me_status(&client, replica, token).await, 200);
        }
        let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
        let migrations: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        let users: i64 = sqlx::query_scalar("select count(*) from users")
            .fetch_one(&pool)
            .await
            .unwrap();
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
            .unwrap()
            .count();
        assert_eq!(migrations, files as i64, "each migration applied once");
        assert_eq!(users, 2, "the seed ran once");
        pool.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_replica_holds_there_at_once_and_everywhere_within_a_second() {
    on_postgres(async {
        let database = TestDatabase::new().await;
        let replicas = start_replicas(&database, 3, &[]);
        let client = Client::new();
        let (_, body) = login(&client, &replicas[0], "secret").await;
        let token = body["access_token"].as_str().unwrap();
        // Every replica has the token in its cache.
        for replica in &replicas {
            for _ in 0..3 {
                assert_eq!(me_status(&client, replica, token).await, 200);
            }
        }

        let revoked = client
            .post(format!("{}/token/revoke", replicas[1].address))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);

        assert_eq!(
            me_status(&client, &replicas[1], token).await,
            401,
            "at once where revoked"
        );
        // The contract allows a second; cached answers expire after one anyway, so the
        // notification is held to much less, or this would pass without it.
        for replica in [&replicas[0], &replicas[2]] {
            let status =
                status_within(&client, replica, token, 401, Duration::from_millis(300)).await;
            assert_eq!(status, 401, "within 300 ms on {}", replica.address);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_spread_over_replicas_reach_one_limit() {
    on_postgres(async {
        let database = TestDatabase::new().await;
        let replicas = start_replicas(&database, 3, &[]);
        let client = Client::new();

        for attempt in 0..10 {
            let (status, _) = login(&client, &replicas[attempt % 3], "wrong").await;
            assert_eq!(status, 400, "attempt {attempt}");
        }

        for replica in &replicas {
            let (status, body) = login(&client, replica, "secret").await;
            assert_eq!(status, 429, "{}: {body}", replica.address);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_correct_logins_on_three_replicas_are_never_throttled() {
    on_postgres(async {
        let database = TestDatabase::new().await;
        let replicas = start_replicas(&database, 3, &[("LOGIN_MAX_FAILURES", "4")]);
        let client = Client::new();

        for round in 0..3 {
            let logins = (0..12).map(|i| login(&client, &replicas[i % 3], "secret"));
            for (status, body) in join_all(logins).await {
                assert_eq!(status, 200, "round {round}: {body}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_trusted_on_one_replica_is_trusted_on_another() {
    on_postgres(async {
        let database = TestDatabase::new().await;
        let replicas = start_replicas(&database, 2, &[("LOGIN_MAX_FAILURES", "3")]);
        let client = Client::new();
        let response = client
            .post(format!("{}/token", replicas[0].address))
            .form(&[("username", "johndoe"), ("password", "secret")])
            .send()
            .await
            .unwrap();
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        for _ in 0..3 {
            assert_eq!(login(&client, &replicas[0], "wrong").await.0, 400);
        }
        assert_eq!(login(&client, &replicas[1], "secret").await.0, 429);

        let trusted = client
            .post(format!("{}/token", replicas[1].address))
            .header("cookie", cookie)
            .form(&[("username", "johndoe"), ("password", "secret")])
            .send()
            .await
            .unwrap();

        assert_eq!(trusted.status(), 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_loses_nothing_the_others_cannot_serve() {
    on_postgres(async {
        let database = TestDatabase::new().await;
        let mut replicas = start_replicas(&database, 3, &[]);
        let client = Client::new();
        let victim = replicas.remove(0);

        // Logins on every replica; the victim is killed while they run.
        let load = {
            let client = client.clone();
            let addresses: Vec<String> = std::iter::once(victim.address.clone())
                .chain(replicas.iter().map(|r| r.address.clone()))
                .collect();
            tokio::spawn(async move {
                let workers = (0..6).map(|i| {
                    let client = client.clone();
                    let address = addresses[i % addresses.len()].clone();
                    async move {
                        let mut tokens = Vec::new();
                        let started = Instant::now();
                        while started.elapsed() < Duration::from_millis(1500) {
                            let answer = client
                                .post(format!("{address}/token"))
                                .form(&[("username", "johndoe"), ("password", "secret")])
                                .send()
                                .await;
                            let Ok(response) = answer else { break };
                            let Ok(body) = response.json::<Value>().await else {
                                break;
                            };
                            tokens.push(body["access_token"].as_str().unwrap().to_owned());
                        }
                        tokens
                    }
                });
                join_all(workers).await.concat()
            })
        };
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(victim); // SIGKILL
        let answered = load.await.unwrap();

        assert!(
            answered.len() > 3,
            "only {} logins answered",
            answered.len()
        );
        for token in &answered {
            for replica in &replicas {
                assert_eq!(me_status(&client, replica, token).await, 200);
            }
        }
    })
    .await;
}

/// A TCP proxy to PostgreSQL that the test can cut off and restore.
struct Proxy {
    address: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (cut, cut_off) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *cut_off.borrow() {
                    continue; // dropped: the connection is closed at once
                }
                let mut cut_off = cut_off.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut_off.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { address, cut }
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn restore(&self) {
        self.cut.send_replace(false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_cut_off_the_service_answers_503_and_recovers_by_itself() {
    on_postgres(async {
        let database = Arc::new(TestDatabase::new().await);
        let upstream: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let proxy = Proxy::start(upstream).await;
        let through_proxy = database
            .url
            .replacen("127.0.0.1:5432", &proxy.address.to_string(), 1);
        let app = spawn_app_on(database.clone(), |s| {
            s.database.database_url = simple_oauth2::store::DatabaseUrl::new(through_proxy);
        })
        .await;
        let token = app.token_for("johndoe", "secret", "").await;

        proxy.cut();
        let started = Instant::now();
        for response in [
            app.get("/health").send().await.unwrap(),
            app.login("johndoe", "secret").await,
            app.revoke(&token).await,
        ] {
            assert_unavailable(response).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered within seconds"
        );

        proxy.restore();
        let started = Instant::now();
        loop {
            let status = app.get("/health").send().await.unwrap().status();
            if status == 200 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "back by itself"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(app.login("johndoe", "secret").await.status(), 200);
        assert_eq!(app.me_status(&token).await, 200);
    })
    .await;
}
