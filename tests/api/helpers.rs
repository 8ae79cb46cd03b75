//! A real server per test: its own temporary SQLite file, a free port, real HTTP.

use std::{path::PathBuf, sync::Arc};

use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;
use simple_oauth2::{Server, Settings, auth::Auth};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};

pub struct TestApp {
    pub address: String,
    pub client: Client,
    pub db_path: PathBuf,
    pub auth: Arc<Auth>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _dir: TempDir,
}

/// The service with its default settings on a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The service on a fresh database, with settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db_path = dir.path().join("test.db");
    spawn_app_at(dir, db_path, configure).await
}

/// The service on the database at `db_path`, keeping `dir` until the app is dropped.
pub async fn spawn_app_at(
    dir: TempDir,
    db_path: PathBuf,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = Settings::with_database(format!("sqlite:{}", db_path.display()));
    settings.port = 0;
    configure(&mut settings);
    let server = Server::build(&settings).await.expect("server starts");
    let address = format!("http://{}", server.local_addr());
    let auth = server.auth();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(server.run_until(async {
        let _ = stop.await;
    }));
    TestApp {
        address,
        client: Client::new(),
        db_path,
        auth,
        shutdown: Some(shutdown),
        server: Some(server),
        _dir: dir,
    }
}

impl TestApp {
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
        let response = self.login_with_scope(username, password, scope).await;
        assert_eq!(response.status(), 200, "login as {username} failed");
        let body: Value = response.json().await.expect("JSON body");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// `GET path` with `Authorization: Bearer <token>`.
    pub async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.get(path)
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
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
            .env("DATABASE_URL", format!("sqlite:{}", self.db_path.display()))
            .env("RUST_LOG", "warn")
            .args(args);
        command
    }

    /// Every byte of the database file and its write-ahead log.
    pub fn database_bytes(&self) -> Vec<u8> {
        let mut bytes = std::fs::read(&self.db_path).expect("database file");
        let wal = self.db_path.with_extension("db-wal");
        bytes.extend(std::fs::read(wal).unwrap_or_default());
        bytes
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
    pub fn start(db_path: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_simple-oauth2"))
            .env("DATABASE_URL", format!("sqlite:{}", db_path.display()))
            .env("PORT", "0")
            .env("LOGIN_MAX_FAILURES_PER_ADDRESS", "0")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("binary starts");
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

/// Tells the person running the tests that one was skipped. Written straight to the
/// terminal: libtest swallows `eprintln!` from a test that passes.
pub fn say_skipped(what: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n{what} skipped: {reason}\n");
}
