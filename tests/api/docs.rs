//! `/docs`, `/openapi.json`, `/health`, and the JSON of framework errors.

use serde_json::{Value, json};

use crate::helpers::{assert_unavailable, spawn_app, status_and_json};

#[tokio::test]
async fn the_docs_page_is_served_from_the_binary() {
    let app = spawn_app().await;

    for path in ["/docs", "/docs/"] {
        let response = app.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let html = response.text().await.unwrap();
        assert!(html.contains("SwaggerUIBundle"));
        for attribute in [
            "src=\"http",
            "src=\"//",
            "href=\"http",
            "href=\"//",
            "url(http",
        ] {
            assert!(!html.contains(attribute), "{path} references {attribute}");
        }
    }
}

#[tokio::test]
async fn redoc_is_served_from_the_binary() {
    let app = spawn_app().await;

    let response = app.get("/redoc").send().await.unwrap();

    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    let html = response.text().await.unwrap();
    assert!(
        html.contains("Redoc.init("),
        "the ReDoc script is in the page"
    );
    assert!(
        html.contains("OAuth2PasswordBearer"),
        "the document is in the page"
    );
    for reference in [
        "src=\"http",
        "src=\"//",
        "href=\"http",
        "href=\"//",
        "url(http",
        "fonts.googleapis.com",
    ] {
        assert!(!html.contains(reference), "/redoc references {reference}");
    }
    app.assert_method_not_allowed("POST", "/redoc", "GET").await;
}

/// Where each security scheme's name first appears in `text`.
fn scheme_positions(text: &str) -> (usize, usize) {
    let find = |name| {
        text.find(name)
            .unwrap_or_else(|| panic!("{name} is missing"))
    };
    (
        find("\"OAuth2PasswordBearer\""),
        find("\"ClientBasicAuth\""),
    )
}

#[tokio::test]
async fn the_users_login_comes_first_in_the_authorize_dialog() {
    let app = spawn_app().await;
    let spec = app
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let docs = app.get("/docs").send().await.unwrap().text().await.unwrap();

    let document: Value = serde_json::from_str(&spec).unwrap();
    let names: Vec<&String> = document["components"]["securitySchemes"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(names, ["OAuth2PasswordBearer", "ClientBasicAuth"]);
    // Swagger UI reads the document embedded in its page (after its script), in that
    // order; the operations before it name the schemes too.
    let schemes = docs
        .rfind("\"securitySchemes\"")
        .expect("the document in the page");
    let in_page = &docs[schemes..];
    let (login, client) = scheme_positions(in_page);
    assert!(login < client, "the client scheme comes first in /docs");
}

async fn spec() -> Value {
    let app = spawn_app().await;
    let (status, spec) = status_and_json(app.get("/openapi.json").send().await.unwrap()).await;
    assert_eq!(status, 200);
    spec
}

#[tokio::test]
async fn the_openapi_document_declares_the_password_flow_with_its_scopes() {
    let spec = spec().await;

    let scheme = &spec["components"]["securitySchemes"]["OAuth2PasswordBearer"];
    assert_eq!(scheme["type"], "oauth2");
    let flow = &scheme["flows"]["password"];
    assert_eq!(flow["tokenUrl"], "token");
    assert_eq!(flow["refreshUrl"], "token");
    let form = &spec["components"]["schemas"]["TokenRequest"]["properties"];
    for field in [
        "grant_type",
        "username",
        "password",
        "refresh_token",
        "scope",
    ] {
        assert!(form[field].is_object(), "the token form documents {field}");
    }
    assert!(flow["scopes"]["me"].is_string());
    assert!(flow["scopes"]["items"].is_string());
    for (path, scopes) in [
        ("/users/me", json!([])),
        ("/users/me/items", json!(["items"])),
    ] {
        assert_eq!(
            spec["paths"][path]["get"]["security"],
            json!([{"OAuth2PasswordBearer": scopes}]),
            "{path}"
        );
    }
}

#[tokio::test]
async fn every_status_an_operation_answers_is_documented_with_a_body() {
    let spec = spec().await;
    let expected: [(&str, &str, &[&str]); 5] = [
        ("/token", "post", &["200", "400", "413", "429", "503"]),
        ("/token/revoke", "post", &["200", "400", "413", "503"]),
        ("/users/me", "get", &["200", "400", "401", "503"]),
        (
            "/users/me/items",
            "get",
            &["200", "400", "401", "403", "503"],
        ),
        ("/health", "get", &["200", "503"]),
    ];

    for (path, method, statuses) in expected {
        let responses = &spec["paths"][path][method]["responses"];
        for status in statuses {
            let content = &responses[status]["content"]["application/json; charset=utf-8"];
            assert!(
                content["schema"].is_object(),
                "{method} {path} does not document {status} with a body"
            );
        }
    }
}

#[tokio::test]
async fn health_says_ok_while_the_database_answers() {
    let app = spawn_app().await;

    let (status, body) = status_and_json(app.get("/health").send().await.unwrap()).await;

    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn the_docs_and_the_document_only_answer_get() {
    let app = spawn_app().await;

    for path in [
        "/docs",
        "/openapi.json",
        "/.well-known/oauth-authorization-server",
    ] {
        app.assert_method_not_allowed("POST", path, "GET").await;
    }
}

both_backends! {
    #[tokio::test]
    async fn without_a_database_the_service_answers_503_json() {
        let app = spawn_app().await;
        let token = app.token_for("johndoe", "secret", "").await;
        app.close_database().await;

        let health = app.get("/health").send().await.unwrap();
        let me = app.get_with_token("/users/me", &token).await;
        let login = app.login("johndoe", "secret").await;

        for response in [health, me, login] {
            assert_unavailable(response).await;
        }
    }

    #[tokio::test]
    async fn an_unknown_path_is_json_404() {
        let app = spawn_app().await;

        for path in ["/nope", "/users", "/users/me/other", "/token/x"] {
            let (status, body) = status_and_json(app.get(path).send().await.unwrap()).await;
            assert_eq!(status, 404, "{path}");
            assert_eq!(body, json!({"detail": "Not Found"}));
        }
    }
}
