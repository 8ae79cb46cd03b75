//! The newcomer's mistakes at start: the real binary in a folder of its own, with a given
//! `.env` and a clean environment. Each mistake gets one line that says what is wrong and
//! how to fix it, exit code 1, and no database file.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use assert_cmd::assert::Assert;
use tempfile::TempDir;

use crate::helpers::{
    Backend, ServerProcess, TestDatabase, postgres_available, spawn_app_with, status_and_json,
};

/// A folder holding a `.env`, where the binary runs with nothing else in its environment.
struct Folder {
    dir: TempDir,
}

impl Folder {
    fn with_env_file(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), text).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The binary with `args`, in this folder, with only `PATH` and `HOME` set.
    fn command(&self, args: &[&str]) -> assert_cmd::Command {
        let mut command = assert_cmd::Command::new(ServerProcess::BINARY);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .current_dir(self.path())
            .args(args)
            // A mistake that is not caught would serve forever.
            .timeout(Duration::from_secs(30));
        command
    }

    /// The names of the files in the folder other than `.env`.
    fn other_files(&self) -> Vec<String> {
        std::fs::read_dir(self.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != ".env")
            .collect()
    }

    /// Runs `args`, checks that it failed with one line on standard error, that nothing
    /// was created, and returns the line.
    fn one_line_failure(&self, args: &[&str]) -> String {
        let line = one_line_failure(self.command(args).assert());
        assert_eq!(self.other_files(), Vec::<String>::new(), "{line}");
        line
    }
}

/// Checks exit code 1 and exactly one line, `error: ...`, on standard error.
fn one_line_failure(assert: Assert) -> String {
    let assert = assert.code(1);
    let output = assert.get_output();
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr.trim_end().to_owned()
}

fn stderr_of(assert: &Assert) -> String {
    String::from_utf8(assert.get_output().stderr.clone()).unwrap()
}

#[test]
fn a_database_url_of_no_supported_database_is_refused_naming_the_three() {
    let cases = [
        ("postgres:mydb", "postgres://user@host"),
        (
            "postgress://app:pw@localhost/db",
            "did you mean postgres://?",
        ),
        ("mysql://app:pw@localhost/db", "MySQL"),
        ("simple-oauth2.db", ".env line 2"),
    ];
    for (url, hint) in cases {
        let folder = Folder::with_env_file(&format!("PORT=0\nDATABASE_URL={url}\n"));

        let line = folder.one_line_failure(&[]);

        assert!(line.contains("DATABASE_URL (.env line 2)"), "{line}");
        assert!(
            line.contains("sqlite:, postgres:// or postgresql://"),
            "{line}"
        );
        assert!(line.contains(hint), "{line}");
        assert!(!line.contains("pw@"), "a password in {line}");
    }
}

#[test]
fn a_new_sqlite_file_is_announced_with_its_full_path() {
    let folder = Folder::with_env_file("DATABASE_URL=sqlite:simple-oath2.db\n");
    let full_path = folder.path().join("simple-oath2.db");

    let first = folder.command(&["migrate"]).assert().success();
    let second = folder.command(&["migrate"]).assert().success();

    let announced = format!(
        "created a new SQLite database file path={}",
        full_path.display()
    );
    assert!(
        stderr_of(&first).contains(&announced),
        "{}",
        stderr_of(&first)
    );
    assert!(
        !stderr_of(&second).contains("created"),
        "{}",
        stderr_of(&second)
    );
}

/// Starts the service in `folder` and returns the first line it prints.
fn start_up_line(folder: &Folder, envs: &[(&str, &str)]) -> String {
    let mut child = Command::new(ServerProcess::BINARY)
        .env_clear()
        .env("PORT", "0")
        .envs(envs.iter().copied())
        .current_dir(folder.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    line
}

#[test]
fn the_start_up_line_names_the_database() {
    let folder = Folder::with_env_file("DATABASE_URL=sqlite:service.db\n");

    let line = start_up_line(&folder, &[]);

    assert!(line.starts_with("serving on http://127.0.0.1:"), "{line}");
    assert!(
        line.trim_end().ends_with("database sqlite:service.db"),
        "{line}"
    );
}

#[tokio::test]
async fn the_start_up_line_never_shows_the_database_password() {
    if !postgres_available().await {
        return;
    }
    let database = TestDatabase::on(Backend::Postgres).await;
    // Trust authentication: the server never asks for the password.
    let url = database.url.replacen("postgres@", "postgres:hunter2@", 1);
    let folder = Folder::with_env_file("");

    let line = start_up_line(&folder, &[("DATABASE_URL", &url)]);

    assert!(line.contains("database postgres://postgres:***@"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}

#[test]
fn a_key_set_twice_in_env_with_different_values_names_both_lines() {
    let folder = Folder::with_env_file(
        "# copied from .env.example\nPORT=8000\nHOST=127.0.0.1\n\n# mine\nPORT=9205\n",
    );

    let line = folder.one_line_failure(&[]);

    assert!(line.contains("PORT"), "{line}");
    assert!(line.contains("line 2 and line 6"), "{line}");
}

#[test]
fn a_near_miss_key_in_env_gets_a_warning_naming_the_setting() {
    let folder =
        Folder::with_env_file("DATABASE_URL=sqlite:x.db\nACESS_TOKEN_TTL=5m\nMY_OWN_THING=1\n");

    let assert = folder.command(&["migrate"]).assert().success();

    let stderr = stderr_of(&assert);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("ACESS_TOKEN_TTL in .env line 2")
            && warnings[0].contains("did you mean ACCESS_TOKEN_TTL?"),
        "{stderr}"
    );
}

#[test]
fn a_bad_value_names_the_variable_where_it_came_from_and_a_good_value() {
    let folder = Folder::with_env_file("HOST=127.0.0.1\nPORT=0\nACCESS_TOKEN_TTL=banana\n");

    let from_file = folder.one_line_failure(&[]);
    let from_environment = one_line_failure(folder.command(&[]).env("PORT", "eighty").assert());

    assert!(
        from_file.starts_with("error: ACCESS_TOKEN_TTL (.env line 3) is \"banana\""),
        "{from_file}"
    );
    assert!(
        from_file.contains("for example ACCESS_TOKEN_TTL=30m"),
        "{from_file}"
    );
    assert!(!from_file.contains("--access-token-ttl"), "{from_file}");
    assert!(
        from_environment.starts_with("error: PORT (the environment) is \"eighty\""),
        "{from_environment}"
    );
    assert!(
        from_environment.contains("for example PORT=8000"),
        "{from_environment}"
    );
}

#[test]
fn a_bad_flag_is_named_as_the_flag() {
    let folder = Folder::with_env_file("");

    let assert = folder
        .command(&["--access-token-ttl", "banana"])
        .assert()
        .code(2);

    assert!(stderr_of(&assert).contains("'--access-token-ttl <ACCESS_TOKEN_TTL>'"));
    assert_eq!(folder.other_files(), Vec::<String>::new());
}

#[test]
fn management_commands_read_only_the_settings_they_use() {
    let folder = Folder::with_env_file(
        "DATABASE_URL=sqlite:x.db\nACCESS_TOKEN_TTL=banana\nCORS_ALLOWED_ORIGINS=nope\n",
    );

    folder
        .command(&["users", "list"])
        .assert()
        .success()
        .stdout(predicates::str::contains("johndoe"));
    folder
        .command(&["hash-password", "--password-stdin"])
        .write_stdin("hunter2\n")
        .assert()
        .success();
    let serve = one_line_failure(folder.command(&["serve"]).assert());
    assert!(serve.contains("ACCESS_TOKEN_TTL (.env line 2)"), "{serve}");
}

#[test]
fn a_rust_log_that_names_no_level_stops_the_service_naming_it() {
    for (value, hint) in [
        ("inf", "did you mean info?"),
        ("warnig", "did you mean warn?"),
        ("info,simple_oauth2=loud", "does not parse"),
    ] {
        let folder = Folder::with_env_file(&format!("PORT=0\nRUST_LOG={value}\n"));

        let line = folder.one_line_failure(&[]);

        assert!(
            line.starts_with(&format!("error: RUST_LOG (.env line 2) is {value:?}")),
            "{line}"
        );
        assert!(line.contains(hint), "{line}");
    }
}

#[test]
fn users_add_without_a_terminal_says_to_use_password_stdin() {
    use std::os::unix::process::CommandExt;
    let folder = Folder::with_env_file("DATABASE_URL=sqlite:x.db\n");
    let mut command = Command::new(ServerProcess::BINARY);
    command
        .env_clear()
        .current_dir(folder.path())
        .args(["users", "add", "bob"]);
    // SAFETY: setsid(2) in the child before exec, touching no memory: it leaves the
    // terminal of whoever runs the tests, so that the prompt has none.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }

    let line = one_line_failure(
        assert_cmd::Command::from_std(command)
            .timeout(Duration::from_secs(30))
            .assert(),
    );

    assert!(line.contains("no terminal"), "{line}");
    assert!(line.contains("--password-stdin"), "{line}");
}

#[tokio::test]
async fn a_missing_postgres_database_says_how_to_create_it() {
    if !postgres_available().await {
        return;
    }
    let mut url = crate::helpers::postgres_admin_url();
    let slash = url.rfind('/').unwrap();
    url.replace_range(slash + 1.., "simple_oauth2_no_such_database");
    let folder = Folder::with_env_file(&format!("DATABASE_URL={url}\n"));

    let line = folder.one_line_failure(&["users", "list"]);

    assert!(
        line.contains("\"simple_oauth2_no_such_database\" does not exist"),
        "{line}"
    );
    assert!(
        line.contains("createdb simple_oauth2_no_such_database"),
        "{line}"
    );
}

#[tokio::test]
async fn postgres_notices_are_left_for_debug() {
    if !postgres_available().await {
        return;
    }
    let database = TestDatabase::on(Backend::Postgres).await;
    let folder = Folder::with_env_file(&format!("DATABASE_URL={}\n", database.url));
    folder.command(&["migrate"]).assert().success();

    let again = folder.command(&["users", "list"]).assert().success();

    assert_eq!(stderr_of(&again), "");
}

#[tokio::test]
async fn migrate_never_prints_a_database_password() {
    if !postgres_available().await {
        return;
    }
    let database = TestDatabase::on(Backend::Postgres).await;
    let url = format!(
        "{}?password=hunter3",
        database.url.replacen("postgres@", "postgres:hunter2@", 1)
    );
    let folder = Folder::with_env_file("");

    let assert = folder
        .command(&["migrate"])
        .env("DATABASE_URL", &url)
        .assert()
        .success();

    let stdout = String::from_utf8(assert.get_output().stdout.clone()).unwrap();
    assert!(stdout.contains("postgres:***@"), "{stdout}");
    assert!(stdout.contains("?password=***"), "{stdout}");
    assert!(!stdout.contains("hunter"), "{stdout}");
}

/// Runs `command` as an unprivileged user when the tests run as root (who may write
/// anywhere), after opening `folder` to that user.
#[cfg(unix)]
fn unprivileged(command: &mut Command, folder: &Path) {
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    // SAFETY: geteuid(2) reads the process's user id.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    command.uid(65534).gid(65534);
}

#[cfg(unix)]
#[test]
fn a_read_only_folder_or_file_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let outer = tempfile::tempdir().unwrap();
    let folder = outer.path().join("data");
    std::fs::create_dir(&folder).unwrap();
    let file = folder.join("x.db");
    let users = |args: &[&str]| {
        let mut command = Command::new(ServerProcess::BINARY);
        command
            .env_clear()
            .env("DATABASE_URL", format!("sqlite:{}", file.display()))
            .current_dir(outer.path())
            .arg("users")
            .args(args);
        unprivileged(&mut command, outer.path());
        command
    };
    let users_list = || users(&["list"]);
    let run = |command: Command| {
        one_line_failure(
            assert_cmd::Command::from_std(command)
                .timeout(Duration::from_secs(30))
                .assert(),
        )
    };

    // No file yet, and a folder nobody may write in.
    mode(&folder, 0o555);
    let no_file = run(users_list());
    assert!(
        no_file.contains(&format!("the folder {} is not writable", folder.display())),
        "{no_file}"
    );
    assert!(!file.exists());

    // A writable file in that folder: SQLite cannot create its journal beside it.
    mode(&folder, 0o777);
    let mut create = users_list();
    create.stdout(Stdio::null()).stderr(Stdio::null());
    assert!(create.status().unwrap().success());
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    mode(&file, 0o600);
    mode(&folder, 0o555);
    let journal = run(users_list());
    assert!(
        journal.contains(&format!("the folder {} is not writable", folder.display())),
        "{journal}"
    );

    // A read-only file in a writable folder: SQLite reads it, and refuses a change.
    mode(&folder, 0o777);
    mode(&file, 0o400);
    let read_only = run(users(&["disable", "alice"]));
    assert!(
        read_only.contains(&format!(
            "the database file {} is read-only",
            file.display()
        )),
        "{read_only}"
    );
}

#[tokio::test]
async fn a_wildcard_host_gives_a_loopback_issuer() {
    let app = spawn_app_with(|settings| settings.host = "0.0.0.0".into()).await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();

    let (status, metadata) = status_and_json(
        app.get("/.well-known/oauth-authorization-server")
            .send()
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(status, 200);
    assert_eq!(metadata["issuer"], format!("http://127.0.0.1:{port}"));
}

#[test]
fn a_wildcard_host_without_issuer_warns_at_start() {
    let folder = Folder::with_env_file("DATABASE_URL=sqlite:x.db\nHOST=0.0.0.0\nPORT=0\n");
    let mut child = Command::new(ServerProcess::BINARY)
        .env_clear()
        .current_dir(folder.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());

    let warning = stderr
        .lines()
        .map_while(Result::ok)
        .find(|line| line.contains("WARN"));
    let _ = child.kill();
    let _ = child.wait();

    let warning = warning.expect("a warning");
    assert!(warning.contains("set ISSUER"), "{warning}");
    assert!(warning.contains("http://127.0.0.1:"), "{warning}");
}
