//! A real server per test: its own database (a temporary SQLite file, or a PostgreSQL
//! database made for it), a free port, real HTTP.

use std::{future::Future, path::PathBuf, sync::Arc};

use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;
use simple_oauth2::{Server, Settings, auth::Auth, store::Pool};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};

/// Writes each test twice: `name::sqlite` and `name::postgres`, the body run with
/// [`spawn_app`] and [`TestDatabase::new`] on that backend. Attributes (`#[tokio::test]`
/// with its options) apply to both.
macro_rules! both_backends {
    ($($(#[$attr:meta])* async fn $name:ident() $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run() $body

                $(#[$attr])*
                async fn sqlite() {
                    $crate::helpers::on_backend($crate::helpers::Backend::Sqlite, run()).await
                }

                $(#[$attr])*
                async fn postgres() {
                    $crate::helpers::on_backend($crate::helpers::Backend::Postgres, run()).await
                }
            }
        )*
    };
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    static BACKEND: Backend;
}

/// The backend of the running test (SQLite outside [`both_backends!`]).
pub fn backend() -> Backend {
    BACKEND
        .try_with(|backend| *backend)
        .unwrap_or(Backend::Sqlite)
}

/// Runs `test` on `backend`; on PostgreSQL only when a server answers (see
/// [`postgres_available`]).
pub async fn on_backend(backend: Backend, test: impl Future<Output = ()>) {
    if backend == Backend::Postgres && !postgres_available().await {
        return;
    }
    BACKEND.scope(backend, test).await;
}

/// The PostgreSQL server the tests make their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Whether the PostgreSQL tests can run. Without a server they are skipped, and say so,
/// unless `REQUIRE_POSTGRES_TESTS=1` (as in CI), where that fails them.
pub async fn postgres_available() -> bool {
    static AVAILABLE: tokio::sync::OnceCell<Result<(), String>> =
        tokio::sync::OnceCell::const_new();
    let available = AVAILABLE
        .get_or_init(|| async {
            let url = postgres_admin_url();
            let connect = sqlx::PgPool::connect(&url);
            match tokio::time::timeout(std::time::Duration::from_secs(3), connect).await {
                Ok(Ok(pool)) => {
                    pool.close().await;
                    Ok(())
                }
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("no answer within 3 s".into()),
            }
        })
        .await;
    match available {
        Ok(()) => true,
        Err(reason) => {
            assert!(
                std::env::var("REQUIRE_POSTGRES_TESTS").as_deref() != Ok("1"),
                "PostgreSQL is required (REQUIRE_POSTGRES_TESTS=1) but {} does not answer: {reason}",
                postgres_admin_url()
            );
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                say_skipped(
                    "PostgreSQL tests",
                    &format!(
                        "no server at {} ({reason}); set TEST_POSTGRES_URL, or start PostgreSQL",
                        postgres_admin_url()
                    ),
                );
            });
            false
        }
    }
}

/// A database of a test's own: a SQLite file in a temporary folder, or a PostgreSQL
/// database created for it and dropped afterwards.
pub struct TestDatabase {
    pub url: String,
    /// The SQLite file, when the backend is SQLite.
    pub sqlite_path: Option<PathBuf>,
    _dir: TempDir,
    postgres_name: Option<String>,
}

impl TestDatabase {
    /// A fresh, empty database on the running test's backend.
    pub async fn new() -> Self {
        Self::on(backend()).await
    }

    pub async fn on(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        match backend {
            Backend::Sqlite => {
                let path = dir.path().join("test.db");
                Self {
                    url: format!("sqlite:{}", path.display()),
                    sqlite_path: Some(path),
                    _dir: dir,
                    postgres_name: None,
                }
            }
            Backend::Postgres => {
                let name = format!("simple_oauth2_test_{}", random_suffix());
                let admin = sqlx::PgPool::connect(&postgres_admin_url())
                    .await
                    .expect("PostgreSQL answers");
                sqlx::query(sqlx::AssertSqlSafe(format!("create database {name}")))
                    .execute(&admin)
                    .await
                    .expect("a test database is created");
                admin.close().await;
                let mut url = postgres_admin_url();
                let slash = url.rfind('/').expect("a database name in the URL");
                url.replace_range(slash + 1.., &name);
                Self {
                    url,
                    sqlite_path: None,
                    _dir: dir,
                    postgres_name: Some(name),
                }
            }
        }
    }

    /// The SQLite file at `path`, keeping `dir` as long as the database lives.
    pub fn sqlite_file(dir: TempDir, path: PathBuf) -> Self {
        Self::sqlite_url(dir, format!("sqlite:{}", path.display()), path)
    }

    /// The SQLite file at `path` opened through `url` (with options such as `?mode=ro`).
    pub fn sqlite_url(dir: TempDir, url: String, path: PathBuf) -> Self {
        Self {
            url,
            sqlite_path: Some(path),
            _dir: dir,
            postgres_name: None,
        }
    }

    pub fn backend(&self) -> Backend {
        if self.postgres_name.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        // Drop may run inside a runtime; a thread of its own can block on its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(&postgres_admin_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {name} with (force)"
                    )))
                    .execute(&admin)
                    .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct TestApp {
    pub address: String,
    /// `host:port` of the metrics listener, when `METRICS_ADDR` was set.
    pub metrics_address: Option<String>,
    pub client: Client,
    pub auth: Arc<Auth>,
    pub database: Arc<TestDatabase>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// The service with its default settings on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The service on a fresh database, with settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(Arc::new(TestDatabase::new().await), configure).await
}

/// The service on `database` (which other apps may share), with settings changed by
/// `configure`.
pub async fn spawn_app_on(
    database: Arc<TestDatabase>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = Settings::with_database(database.url.clone());
    settings.port = 0;
    configure(&mut settings);
    let server = Server::build(&settings).await.expect("server starts");
    let address = format!("http://{}", server.local_addr());
    let metrics_address = server.metrics_addr().map(|address| address.to_string());
    let auth = server.auth();
    let expected = match database.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(
        auth.store().backend(),
        expected,
        "the app runs on the test's backend"
    );
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(server.run_until(async {
        let _ = stop.await;
    }));
    TestApp {
        address,
        metrics_address,
        client: Client::new(),
        auth,
        database,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// Runs `$body` with `$pool` bound to the app's pool, whichever backend it is.
macro_rules! on_test_pool {
    ($app:expr, $pool:ident => $body:expr) => {
        match $app.auth.store().pool() {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

impl TestApp {
    /// Asks `ask` (at most 20 times) until one answer came from the caches before the
    /// router (an early answer was counted while it ran) and one from the database (a
    /// token cache miss was); returns both, in that order.
    pub async fn answers_from_cache_and_database<T, F>(&self, mut ask: impl FnMut() -> F) -> (T, T)
    where
        F: Future<Output = T>,
    {
        let (mut from_cache, mut from_database) = (None, None);
        for _ in 0..20 {
            let (early, misses) = (self.early_answers(), self.auth.token_cache_stats().misses);
            let answer = ask().await;
            if self.early_answers() > early {
                from_cache = Some(answer);
            } else if self.auth.token_cache_stats().misses > misses {
                from_database = Some(answer);
            }
            if from_cache.is_some() && from_database.is_some() {
                break;
            }
        }
        (
            from_cache.expect("no answer came from the caches before the router"),
            from_database.expect("no answer came from the database"),
        )
    }

    /// Requests answered from the caches before the router so far, on every route.
    pub fn early_answers(&self) -> u64 {
        self.counted("simple_oauth2_early_answers_total", "")
    }

    /// The sum of a counter's series whose labels contain `labels` (`""`: all of them).
    pub fn counted(&self, name: &str, labels: &str) -> u64 {
        self.auth
            .metrics()
            .encode()
            .lines()
            .filter_map(|line| line.strip_prefix(name))
            .filter(|rest| rest.starts_with(['{', ' ']) && rest.contains(labels))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.client.post(self.url(path))
    }

    /// `POST /token` with these form fields.
    pub async fn post_token(&self, form: &[(&str, &str)]) -> Response {
        self.post("/token")
            .form(form)
            .send()
            .await
            .expect("request sent")
    }

    /// A password-grant login as Swagger UI sends it.
    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post_token(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
        ])
        .await
    }

    /// A login asking for `scope`.
    pub async fn login_with_scope(&self, username: &str, password: &str, scope: &str) -> Response {
        self.post_token(&[
            ("username", username),
            ("password", password),
            ("scope", scope),
        ])
        .await
    }

    /// Logs in and returns the access token; panics unless the login succeeds.
    pub async fn token_for(&self, username: &str, password: &str, scope: &str) -> String {
        self.tokens_for(username, password, scope).await.0
    }

    /// Logs in and returns the access token and the refresh token.
    pub async fn tokens_for(
        &self,
        username: &str,
        password: &str,
        scope: &str,
    ) -> (String, String) {
        let response = self.login_with_scope(username, password, scope).await;
        assert_eq!(response.status(), 200, "login as {username} failed");
        let body: Value = response.json().await.expect("JSON body");
        let token = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
        (token("access_token"), token("refresh_token"))
    }

    /// `grant_type=refresh_token` with `refresh_token` and, when given, `scope`.
    pub async fn refresh(&self, refresh_token: &str, scope: Option<&str>) -> Response {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.post_token(&form).await
    }

    /// `GET path` with `Authorization: Bearer <token>`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.get(path)
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// The status of `GET path` with `token` after a change made outside this app (the
    /// CLI, plain SQL): asked once on SQLite, where such a change counts from the next
    /// request; on PostgreSQL asked again until it is `expected` or a second has passed,
    /// the contract's bound for changes made by another process.
    pub async fn status_after_outside_change(&self, path: &str, token: &str, expected: u16) -> u16 {
        let deadline = match self.database.backend() {
            Backend::Sqlite => std::time::Duration::ZERO,
            Backend::Postgres => std::time::Duration::from_secs(1),
        };
        let started = std::time::Instant::now();
        loop {
            let status = self.get_with_token(path, token).await.status().as_u16();
            if status == expected || started.elapsed() >= deadline {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The status of `GET /users/me` with `token`.
    pub async fn me_status(&self, token: &str) -> u16 {
        self.get_with_token("/users/me", token)
            .await
            .status()
            .as_u16()
    }

    /// Checks that `method path` gets the contract's 405, naming `allow`.
    pub async fn assert_method_not_allowed(&self, method: &str, path: &str, allow: &str) {
        let response = self
            .client
            .request(method.parse().unwrap(), self.url(path))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        let body: Value = response.json().await.expect("JSON body");
        assert_eq!(body, serde_json::json!({"detail": "Method Not Allowed"}));
    }

    pub async fn revoke(&self, token: &str) -> Response {
        self.post("/token/revoke")
            .form(&[("token", token)])
            .send()
            .await
            .expect("request sent")
    }

    /// The `simple-oauth2` binary, set to work on this app's database.
    pub fn cli(&self, args: &[&str]) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::new(env!("CARGO_BIN_EXE_simple-oauth2"));
        command
            .env("DATABASE_URL", &self.database.url)
            .env("RUST_LOG", "warn")
            .args(args);
        command
    }

    /// Runs a statement with text parameters (`$1`, `$2`, ...).
    pub async fn sql_execute(&self, sql: &'static str, params: &[&str]) {
        on_test_pool!(self, pool => {
            let mut query = sqlx::query(sql);
            for param in params {
                query = query.bind(*param);
            }
            query.execute(pool).await.expect("SQL runs");
        })
    }

    /// The single integer a query answers.
    pub async fn sql_i64(&self, sql: &'static str) -> i64 {
        on_test_pool!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await.expect("SQL runs"))
    }

    /// The strings a query answers, one per row.
    pub async fn sql_strings(&self, sql: &'static str) -> Vec<String> {
        on_test_pool!(self, pool => sqlx::query_scalar(sql).fetch_all(pool).await.expect("SQL runs"))
    }

    /// Every byte of the SQLite database file and its write-ahead log.
    pub fn database_bytes(&self) -> Vec<u8> {
        let path = self.sqlite_path();
        let mut bytes = std::fs::read(path).expect("database file");
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        bytes.extend(std::fs::read(wal).unwrap_or_default());
        bytes
    }

    /// The SQLite database file; panics on PostgreSQL.
    pub fn sqlite_path(&self) -> &std::path::Path {
        self.database
            .sqlite_path
            .as_deref()
            .expect("a SQLite database")
    }

    /// Closes the app's connections to its database, as if the database went away.
    pub async fn close_database(&self) {
        self.auth.store().close().await;
    }

    /// Stops the server the way SIGTERM would, and waits for it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

/// The real binary serving on a free port, for tests that kill or signal the process.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub address: String,
}

impl ServerProcess {
    pub const BINARY: &str = env!("CARGO_BIN_EXE_simple-oauth2");

    /// Starts the binary on `database_url`, with the per-address limit off and `envs`.
    pub fn start(database_url: &str, envs: &[(&str, &str)]) -> Self {
        Self::spawn(Self::command(Self::BINARY, database_url, envs))
    }

    /// `program` (the binary, or a wrapper that runs it) set up to serve
    /// `database_url` on a free port; standard error is dropped unless redirected.
    pub fn command(
        program: &str,
        database_url: &str,
        envs: &[(&str, &str)],
    ) -> std::process::Command {
        let mut command = std::process::Command::new(program);
        command
            .env("DATABASE_URL", database_url)
            .env("PORT", "0")
            .env("LOGIN_MAX_FAILURES_PER_ADDRESS", "0")
            .envs(envs.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        command
    }

    /// Runs `command` and waits until it says where it serves.
    pub fn spawn(mut command: std::process::Command) -> Self {
        use std::io::BufRead;
        let mut child = command.spawn().expect("binary starts");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (found, address) = std::sync::mpsc::channel();
        // Reads the address from the start-up line, then keeps draining the output so
        // the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving on ").nth(1) {
                    let address = rest.split(',').next().unwrap_or_default().to_owned();
                    let _ = found.send(address);
                }
            }
        });
        let address = address
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the server says where it listens");
        Self { child, address }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the server.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) on our own child, with no memory passed.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(result, 0, "kill failed");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status and JSON body of a response.
pub async fn status_and_json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("JSON body");
    (status, body)
}

/// Checks the answer of a service whose database does not answer: 503 JSON with a
/// `detail` and `Retry-After`. Returns the body.
pub async fn assert_unavailable(response: Response) -> Value {
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("JSON body");
    assert!(body["detail"].is_string(), "{body}");
    body
}

/// Tells the person running the tests that one was skipped: at once, and again after
/// libtest's summary, where it cannot be lost among the passing tests. Written straight
/// to the terminal: libtest swallows `eprintln!` from a test that passes.
pub fn say_skipped(what: &str, reason: &str) {
    use std::io::Write;
    static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    static AT_EXIT: std::sync::Once = std::sync::Once::new();

    extern "C" fn summarize() {
        let skipped = SKIPPED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut err = std::io::stderr().lock();
        for line in skipped.iter() {
            let _ = writeln!(err, "SKIPPED: {line}");
        }
    }

    let _ = writeln!(std::io::stderr(), "\n{what} skipped: {reason}\n");
    SKIPPED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(format!("{what}: {reason}"));
    // SAFETY: atexit(3) keeps a pointer to a function that lives as long as the program.
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(summarize);
    });
}
