//! What is on disk: no usable token, no plain password, a private file.

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_raw_token_never_reaches_the_database_file() {
    let app = spawn_app().await;
    let token = app.token_for("johndoe", "secret", "me").await;
    assert_eq!(app.get_with_token("/users/me", &token).await.status(), 200);

    let bytes = app.database_bytes();
    assert!(!bytes.is_empty());
    let found = bytes
        .windows(token.len())
        .any(|window| window == token.as_bytes());
    assert!(!found, "the token is stored in the clear");
    app.stop().await;
}

#[tokio::test]
async fn seeded_passwords_are_argon2id_hashes() {
    let app = spawn_app().await;

    let hashes = app.sql_strings("select hashed_password from users").await;

    assert_eq!(hashes.len(), 2);
    for hash in hashes {
        assert!(hash.starts_with("$argon2id$"), "{hash}");
    }
    let bytes = app.database_bytes();
    for plain in ["secret", "secret2"] {
        let needle = format!("'{plain}'");
        assert!(!bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
    }
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = spawn_app().await;

    let mode = std::fs::metadata(app.sqlite_path())
        .unwrap()
        .permissions()
        .mode();

    assert_eq!(mode & 0o777, 0o600);
}
