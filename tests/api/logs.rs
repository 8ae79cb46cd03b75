//! Text logs: whatever a client sends stays on its own log line, with its control
//! characters escaped (no forged lines, no terminal escapes).

use crate::helpers::{ServerProcess, TestDatabase};

#[tokio::test]
async fn a_forged_log_line_stays_on_its_line() {
    let database = TestDatabase::new().await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("server.log");
    let mut command = ServerProcess::command(
        ServerProcess::BINARY,
        &database.url,
        &[("RUST_LOG", "info"), ("LOG_FORMAT", "text")],
    );
    command.stderr(std::fs::File::create(&log_path).unwrap());
    let server = ServerProcess::spawn(command);
    let client = reqwest::Client::new();

    for username in [
        "evil\r\nINFO audit forged",
        "evil\x1b[2J\x1b[1;1Hcleared\u{9b}31m",
    ] {
        let response = client
            .post(format!("{}/token", server.address))
            .form(&[("username", username), ("password", "wrong")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    drop(server);

    let log = std::fs::read_to_string(&log_path).unwrap();
    let failures: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("login failed"))
        .collect();
    assert_eq!(failures.len(), 2, "{log}");
    assert!(
        failures[0].contains(r"username=evil\r\nINFO audit forged"),
        "{}",
        failures[0]
    );
    assert!(
        failures[1].contains(r"username=evil\u{1b}[2J\u{1b}[1;1Hcleared\u{9b}31m"),
        "{}",
        failures[1]
    );
    assert!(
        !log.lines()
            .any(|line| line.starts_with("INFO audit forged")),
        "{log}"
    );
    assert!(!log.contains(['\r', '\x1b', '\u{9b}']), "{log:?}");
}
