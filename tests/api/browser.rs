//! The tutorial's "See it in action", in a real headless Chromium driven over WebDriver:
//! Authorize in Swagger UI, call `GET /users/me`, log out, log in as the disabled user,
//! mistype a password; a user with a second factor logging in with the code after the
//! password; then ReDoc. Screenshots of each step go to `target/tmp/browser/`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test says it was
//! skipped and passes, unless `REQUIRE_BROWSER_TEST=1` (as in CI) makes that a failure.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, say_skipped, spawn_app},
    totp,
};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";
const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver process on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Option<Driver> {
        if !Path::new(CHROMIUM).exists() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        for _ in 0..100 {
            if reqwest::get(&status).await.is_ok_and(|r| r.status() == 200) {
                return Some(driver);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    async fn browser(&self, profile: &Path) -> Client {
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1400",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromium starts under chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The browser, the app it looks at, and where screenshots go.
struct Session {
    browser: Client,
    app: TestApp,
    shots: PathBuf,
}

impl Session {
    async fn find(&self, css: &str) -> Element {
        self.browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no element {css}: {err}"))
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.browser.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write screenshot");
    }

    /// Opens the Authorize dialog and logs in with the password flow.
    async fn authorize(&self, username: &str, password: &str) {
        self.click("button.btn.authorize").await;
        self.find("#oauth_username")
            .await
            .send_keys(username)
            .await
            .unwrap();
        self.find("#oauth_password")
            .await
            .send_keys(password)
            .await
            .unwrap();
        // The dialog lists every scheme (the clients' HTTP Basic one too): this one's.
        self.browser
            .find(Locator::XPath(
                "//div[contains(@class, 'auth-container')]\
                 [.//h4[contains(., 'OAuth2PasswordBearer')]]\
                 //button[contains(@class, 'authorize')]",
            ))
            .await
            .expect("the password flow's Authorize button")
            .click()
            .await
            .unwrap();
    }

    async fn close_dialog(&self) {
        self.click(".auth-btn-wrapper button.btn-done").await;
    }

    /// Waits until the dialog shows a Logout button (logged in) and closes it.
    async fn expect_logged_in(&self, shot: &str) {
        self.browser
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath("//button[contains(., 'Logout')]"))
            .await
            .expect("the dialog says we are logged in");
        self.screenshot(shot).await;
        self.close_dialog().await;
    }

    async fn logout(&self) {
        self.click("button.btn.authorize").await;
        self.browser
            .find(Locator::XPath("//button[contains(., 'Logout')]"))
            .await
            .expect("a Logout button")
            .click()
            .await
            .unwrap();
        self.close_dialog().await;
    }

    /// "Execute" on `GET /users/me` and the status and body Swagger UI shows.
    async fn execute_users_me(&self, shot: &str) -> (String, String) {
        let operation = "#operations-Users-read_users_me";
        // Clear the previous answer, so the wait below sees the new one.
        if let Ok(clear) = self
            .browser
            .find(Locator::Css(&format!("{operation} button.btn-clear")))
            .await
        {
            clear.click().await.unwrap();
        }
        self.click(&format!("{operation} button.execute")).await;
        let status = self
            .find(&format!(
                "{operation} .live-responses-table tr.response .response-col_status"
            ))
            .await;
        let body = self
            .find(&format!(
                "{operation} .live-responses-table tr.response .response-col_description pre"
            ))
            .await;
        let scroll = format!(
            "document.querySelector('{operation} .live-responses-table').scrollIntoView({{block: 'center'}})"
        );
        self.browser.execute(&scroll, vec![]).await.unwrap();
        self.screenshot(shot).await;
        (
            status.text().await.unwrap().trim().to_owned(),
            body.text().await.unwrap(),
        )
    }

    /// Every URL the page has loaded: documents, scripts, styles, images, fetches.
    async fn loaded_urls(&self) -> Vec<String> {
        let urls = self
            .browser
            .execute(
                "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name))",
                vec![],
            )
            .await
            .unwrap();
        serde_json::from_value(urls).unwrap()
    }
}

fn skipped(reason: &str) {
    if std::env::var("REQUIRE_BROWSER_TEST").is_ok_and(|v| v == "1") {
        panic!("the browser test is required but {reason}");
    }
    say_skipped(
        "browser test",
        &format!("{reason}. To run it: apt-get install chromium chromium-driver, then cargo test"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_logs_in_and_calls_users_me_in_a_real_browser() {
    let Some(driver) = Driver::start().await else {
        skipped("Chromium and chromedriver were not found");
        return;
    };
    let app = spawn_app().await;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let session = Session {
        browser: driver.browser(profile.path()).await,
        app,
        shots,
    };

    session
        .browser
        .goto(&session.app.url("/docs"))
        .await
        .unwrap();
    session.find("button.btn.authorize").await;
    session.screenshot("1-docs").await;

    // The first form of the dialog is the user's login, where people type johndoe/secret.
    session.click("button.btn.authorize").await;
    let first = session.find(".auth-container h4").await;
    let first = first.text().await.unwrap();
    assert!(
        first.contains("OAuth2PasswordBearer"),
        "the dialog opens on {first}"
    );
    session.click(".modal-ux .close-modal").await;

    session.authorize("johndoe", "secret").await;
    session.expect_logged_in("2-authorized-johndoe").await;
    session
        .click("#operations-Users-read_users_me .opblock-summary")
        .await;
    session
        .click("#operations-Users-read_users_me button.try-out__btn")
        .await;
    let (status, body) = session.execute_users_me("3-users-me-johndoe").await;
    assert_eq!(status, "200");
    assert!(body.contains("\"johndoe\""), "{body}");
    assert!(!body.contains("argon2"), "{body}");

    session.logout().await;
    let (status, body) = session.execute_users_me("4-users-me-logged-out").await;
    assert_eq!(status, "401");
    assert!(body.contains("Not authenticated"), "{body}");

    session.authorize("alice", "secret2").await;
    session.expect_logged_in("5-authorized-alice").await;
    let (status, body) = session.execute_users_me("6-users-me-alice").await;
    assert_eq!(status, "400");
    assert!(body.contains("Inactive user"), "{body}");
    session.logout().await;

    session.authorize("johndoe", "wrong password").await;
    let error = session.find(".modal-ux .errors").await;
    let error = error.text().await.unwrap();
    session.screenshot("7-wrong-password").await;
    assert!(error.contains("invalid_grant"), "{error}");
    assert!(error.contains("Incorrect username or password"), "{error}");

    let origin = session.app.address.clone();
    for url in session.loaded_urls().await {
        assert!(
            url.starts_with(&origin),
            "the page loaded {url} from elsewhere"
        );
    }

    session
        .browser
        .goto(&session.app.url("/redoc"))
        .await
        .unwrap();
    // ReDoc has rendered the document: the operations are listed in its menu.
    session
        .browser
        .wait()
        .at_most(WAIT)
        .for_element(Locator::XPath("//*[contains(text(), 'Log in or refresh')]"))
        .await
        .expect("ReDoc renders the operations");
    session.screenshot("8-redoc").await;
    for url in session.loaded_urls().await {
        // ReDoc's search runs in a worker made from a `blob:` URL of this origin.
        let url = url.strip_prefix("blob:").unwrap_or(&url);
        assert!(
            url.starts_with(&origin),
            "/redoc loaded {url} from elsewhere"
        );
    }
    session.browser.close().await.unwrap();
}

/// Swagger UI's Authorize dialog has no field for a one-time code: a user with a second
/// factor types it right after the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_logs_in_a_user_with_a_second_factor_by_appending_the_code() {
    let Some(driver) = Driver::start().await else {
        skipped("Chromium and chromedriver were not found");
        return;
    };
    let app = spawn_app().await;
    let secret = totp::secret_of(&totp::enable_on_cli(&app, "johndoe"));
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let session = Session {
        browser: driver.browser(profile.path()).await,
        app,
        shots,
    };
    session
        .browser
        .goto(&session.app.url("/docs"))
        .await
        .unwrap();
    session.find("button.btn.authorize").await;

    let step = totp::step_now().await;
    let password = format!("secret{}", totp::code(&secret, step));
    session.authorize("johndoe", &password).await;
    session.expect_logged_in("totp-1-authorized").await;
    session
        .click("#operations-Users-read_users_me .opblock-summary")
        .await;
    session
        .click("#operations-Users-read_users_me button.try-out__btn")
        .await;
    let (status, body) = session.execute_users_me("totp-2-users-me").await;
    assert_eq!(status, "200");
    assert!(body.contains("\"johndoe\""), "{body}");
    session.logout().await;

    session.authorize("johndoe", "secret").await;
    let error = session.find(".modal-ux .errors").await;
    let error = error.text().await.unwrap();
    session.screenshot("totp-3-code-required").await;
    assert!(error.contains("invalid_grant"), "{error}");
    assert!(error.contains("A one-time code is required"), "{error}");
    session.browser.close().await.unwrap();
}
