//! DPoP (RFC 9449): tokens bound to a client's key, every proof check, the bound-token
//! rules on protected routes, refresh, revocation, introspection and the metadata, and a
//! real DPoP client of another language (Python's `requests-oauth2client`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Signer as _;
use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use simple_oauth2::auth::{AccessError, DpopHeader, DpopRequest, FromCache, ProofError, TokenType};

use crate::{
    helpers::{TestApp, say_skipped, spawn_app, spawn_app_with, status_and_json},
    introspection::{add_client, introspect, introspection_seen},
    users_me::seen,
};

/// The challenge of a refused proof, exactly as the contract gives it.
const PROOF_CHALLENGE: &str = r#"DPoP error="invalid_dpop_proof", algs="ES256 EdDSA""#;

/// A client's DPoP key pair, making proofs as a client would: signed with p256 and
/// ed25519-dalek directly, not through the library the service verifies with.
struct DpopKey {
    private: PrivateKey,
    /// The public key as the proof's `jwk` header carries it.
    jwk: Value,
}

enum PrivateKey {
    Es256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("random bytes");
    bytes
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl DpopKey {
    fn es256() -> Self {
        let signing = p256::ecdsa::SigningKey::from_slice(&random_bytes()).expect("a P-256 scalar");
        let point = signing.verifying_key().to_sec1_point(false);
        let (x, y) = (point.x().expect("x"), point.y().expect("y"));
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        });
        Self {
            private: PrivateKey::Es256(signing),
            jwk,
        }
    }

    fn ed25519() -> Self {
        let signing = ed25519_dalek::SigningKey::from_bytes(&random_bytes());
        let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
        Self {
            private: PrivateKey::Ed25519(signing),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
        }
    }

    fn alg_name(&self) -> &'static str {
        match self.private {
            PrivateKey::Es256(_) => "ES256",
            PrivateKey::Ed25519(_) => "EdDSA",
        }
    }

    /// RFC 7638: SHA-256 over the required members in lexicographic order, no spaces,
    /// computed here by hand rather than by the library the service uses.
    fn thumbprint(&self) -> String {
        let member = |name: &str| self.jwk[name].as_str().unwrap().to_owned();
        let canonical = match self.private {
            PrivateKey::Es256(_) => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                member("crv"),
                member("x"),
                member("y")
            ),
            _ => format!(
                r#"{{"crv":"{}","kty":"OKP","x":"{}"}}"#,
                member("crv"),
                member("x")
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// The header and claims of a good proof for `method url` (with `ath` for `token`).
    fn parts(&self, method: &str, url: &str, token: Option<&str>) -> (Value, Value) {
        let header = json!({"typ": "dpop+jwt", "alg": self.alg_name(), "jwk": self.jwk});
        let mut claims = json!({
            "jti": URL_SAFE_NO_PAD.encode(random_bytes()),
            "htm": method,
            "htu": url,
            "iat": now_secs(),
        });
        if let Some(token) = token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())));
        }
        (header, claims)
    }

    /// Signs `header` and `claims` as they are, whatever they say.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let signature = match &self.private {
            PrivateKey::Es256(key) => {
                let signature: p256::ecdsa::Signature = key.sign(message.as_bytes());
                signature.to_bytes().to_vec()
            }
            PrivateKey::Ed25519(key) => key.sign(message.as_bytes()).to_bytes().to_vec(),
        };
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn proof(&self, method: &str, url: &str, token: Option<&str>) -> String {
        let (header, claims) = self.parts(method, url, token);
        self.sign(&header, &claims)
    }

    /// A proof for `method url` changed by `edit` before it is signed.
    fn proof_with(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        edit: impl FnOnce(&mut Value, &mut Value),
    ) -> String {
        let (mut header, mut claims) = self.parts(method, url, token);
        edit(&mut header, &mut claims);
        self.sign(&header, &claims)
    }
}

/// A password login with `proof` in the `DPoP` header.
async fn login_with_proof(app: &TestApp, proof: &str) -> Response {
    app.post("/token")
        .header("DPoP", proof)
        .form(&[
            ("username", "johndoe"),
            ("password", "secret"),
            ("scope", "me items"),
        ])
        .send()
        .await
        .unwrap()
}

/// Logs in with a proof of `key`; returns the access and refresh tokens.
async fn dpop_login(app: &TestApp, key: &DpopKey) -> (String, String) {
    let proof = key.proof("POST", &app.url("/token"), None);
    let (status, body) = status_and_json(login_with_proof(app, &proof).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "DPoP", "{body}");
    let token = |name: &str| body[name].as_str().unwrap().to_owned();
    (token("access_token"), token("refresh_token"))
}

/// `GET path` with `Authorization: DPoP <token>` and `proof` (none when `None`).
fn dpop_get(app: &TestApp, path: &str, token: &str, proof: Option<&str>) -> RequestBuilder {
    let request = app
        .get(path)
        .header("Authorization", format!("DPoP {token}"));
    match proof {
        Some(proof) => request.header("DPoP", proof),
        None => request,
    }
}

/// `GET path` with `token` as DPoP and a fresh, good proof of `key`.
async fn dpop_call(app: &TestApp, key: &DpopKey, path: &str, token: &str) -> Response {
    let proof = key.proof("GET", &app.url(path), Some(token));
    dpop_get(app, path, token, Some(&proof))
        .send()
        .await
        .unwrap()
}

/// A refresh with `proof` in the `DPoP` header, or none.
async fn refresh_with(app: &TestApp, refresh_token: &str, proof: Option<&str>) -> Response {
    let mut request = app.post("/token");
    if let Some(proof) = proof {
        request = request.header("DPoP", proof);
    }
    request
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .unwrap()
}

/// Checks the token endpoint's 400 `invalid_dpop_proof`; returns its description.
async fn assert_token_endpoint_refused_proof(response: Response, case: &str) -> String {
    let (status, body) = status_and_json(response).await;
    assert_eq!(status, 400, "{case}: {body}");
    assert_eq!(body["error"], "invalid_dpop_proof", "{case}: {body}");
    assert_eq!(body["detail"], "Invalid DPoP proof", "{case}: {body}");
    let description = body["error_description"].as_str().unwrap().to_owned();
    assert!(
        !description.is_empty() && description.is_ascii(),
        "{case}: {body}"
    );
    description
}

async fn assert_proof_challenge(response: Response, case: &str) {
    assert_eq!(response.status(), 401, "{case}");
    assert_eq!(
        response.headers()["www-authenticate"],
        PROOF_CHALLENGE,
        "{case}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"detail": "Invalid DPoP proof"}), "{case}");
}

async fn assert_invalid_token(response: Response, scheme: &str, case: &str) {
    assert_eq!(response.status(), 401, "{case}");
    assert_eq!(
        response.headers()["www-authenticate"],
        format!(r#"{scheme} error="invalid_token""#).as_str(),
        "{case}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"detail": "Invalid authentication credentials"}),
        "{case}"
    );
}

/// Every way a proof can be wrong, one field at a time, for `method url` and `token`:
/// the case, a word of the `error_description` the token endpoint gives for it, and the
/// proof (of `key` unless the case says otherwise).
fn bad_proofs(
    key: &DpopKey,
    method: &str,
    url: &str,
    token: Option<&str>,
) -> Vec<(&'static str, &'static str, String)> {
    let edit = |edit: &dyn Fn(&mut Value, &mut Value)| {
        key.proof_with(method, url, token, |header, claims| edit(header, claims))
    };
    let good = key.proof(method, url, token);
    let (good_message, good_signature) = good.rsplit_once('.').unwrap();
    let mut signature = URL_SAFE_NO_PAD.decode(good_signature).unwrap();
    signature[0] ^= 1;
    let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"a shared secret");
    let hs256 = {
        let (mut header, claims) = key.parts(method, url, token);
        header["alg"] = json!("HS256");
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        let signature = ring::hmac::sign(&hmac_key, message.as_bytes());
        format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature))
    };
    let unsigned = {
        let (mut header, claims) = key.parts(method, url, token);
        header["alg"] = json!("none");
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        )
    };
    let other_method = if method == "POST" { "GET" } else { "POST" };
    vec![
        (
            "typ JWT",
            "typ",
            edit(&|header, _| header["typ"] = json!("JWT")),
        ),
        (
            "no typ",
            "typ",
            edit(&|header, _| {
                header.as_object_mut().unwrap().remove("typ");
            }),
        ),
        ("alg none", "alg", unsigned),
        ("alg HS256", "alg", hs256),
        (
            "alg ES384 on a P-256 key",
            "alg",
            edit(&|header, _| header["alg"] = json!("ES384")),
        ),
        (
            "jwk with d",
            "jwk",
            edit(&|header, _| header["jwk"]["d"] = json!(URL_SAFE_NO_PAD.encode([7u8; 32]))),
        ),
        (
            "jwk that is no point of the curve",
            "jwk",
            edit(&|header, _| header["jwk"]["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]))),
        ),
        (
            "alg EdDSA with a P-256 jwk",
            "jwk",
            edit(&|header, _| header["alg"] = json!("EdDSA")),
        ),
        (
            "no jwk",
            "jwk",
            edit(&|header, _| {
                header.as_object_mut().unwrap().remove("jwk");
            }),
        ),
        (
            "bad signature",
            "signature",
            format!("{good_message}.{}", URL_SAFE_NO_PAD.encode(&signature)),
        ),
        (
            "another key's jwk",
            "signature",
            edit(&|header, _| header["jwk"] = DpopKey::es256().jwk),
        ),
        (
            "htm of another method",
            "htm",
            edit(&|_, claims| claims["htm"] = json!(other_method)),
        ),
        (
            "htm in lower case",
            "htm",
            edit(&|_, claims| claims["htm"] = json!(method.to_ascii_lowercase())),
        ),
        (
            "htu of another path",
            "htu",
            edit(&|_, claims| claims["htu"] = json!(format!("{url}/other"))),
        ),
        (
            "htu of another host",
            "htu",
            edit(&|_, claims| {
                claims["htu"] = json!(url.replace("127.0.0.1", "evil.example"));
            }),
        ),
        (
            "iat too old",
            "iat",
            edit(&|_, claims| claims["iat"] = json!(now_secs() - 120)),
        ),
        (
            "iat too far ahead",
            "iat",
            edit(&|_, claims| claims["iat"] = json!(now_secs() + 120)),
        ),
        (
            "no iat",
            "lacks a claim",
            edit(&|_, claims| {
                claims.as_object_mut().unwrap().remove("iat");
            }),
        ),
        (
            "no jti",
            "lacks a claim",
            edit(&|_, claims| {
                claims.as_object_mut().unwrap().remove("jti");
            }),
        ),
        ("not a JWT", "well-formed", "not-a-jwt".to_owned()),
    ]
}

both_backends! {
    #[tokio::test]
    async fn a_login_with_a_proof_gets_a_dpop_token_that_works_with_proofs_of_its_key() {
        let app = spawn_app().await;
        for key in [DpopKey::es256(), DpopKey::ed25519()] {
            let (token, _) = dpop_login(&app, &key).await;

            let me = dpop_call(&app, &key, "/users/me", &token).await;
            let (status, body) = status_and_json(me).await;
            assert_eq!((status, body["username"].clone()), (200, json!("johndoe")), "{body}");
            let items = dpop_call(&app, &key, "/users/me/items", &token).await;
            assert_eq!(items.status(), 200, "{}", key.alg_name());
        }
    }

    #[tokio::test]
    async fn the_token_response_says_dpop_with_the_usual_fields_and_headers() {
        let app = spawn_app().await;
        let key = DpopKey::es256();

        let response = login_with_proof(&app, &key.proof("POST", &app.url("/token"), None)).await;

        assert_eq!(response.headers()["cache-control"], "no-store");
        let (status, body) = status_and_json(response).await;
        assert_eq!(status, 200);
        assert_eq!(body["token_type"], "DPoP");
        assert_eq!(body["expires_in"], 1800);
        assert_eq!(body["scope"], "me items");
        assert_eq!(body["refresh_token"].as_str().unwrap().len(), 43);
    }

    #[tokio::test]
    async fn htu_is_compared_without_query_and_fragment() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let url = format!("{}?tab=1#top", app.url("/token"));

        let response = login_with_proof(&app, &key.proof("POST", &url, None)).await;

        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn every_bad_proof_at_the_token_endpoint_is_invalid_dpop_proof() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        for (case, reason, proof) in bad_proofs(&key, "POST", &app.url("/token"), None) {
            let description =
                assert_token_endpoint_refused_proof(login_with_proof(&app, &proof).await, case)
                    .await;
            assert!(description.contains(reason), "{case}: {description}");
        }
        // Nothing was issued for any of them.
        assert_eq!(app.sql_i64("select count(*) from sessions").await, 0);
    }

    #[tokio::test]
    async fn a_reused_empty_or_doubled_dpop_header_is_invalid_dpop_proof() {
        let app = spawn_app().await;
        let key = DpopKey::ed25519();
        let proof = key.proof("POST", &app.url("/token"), None);
        assert_eq!(login_with_proof(&app, &proof).await.status(), 200);

        assert_token_endpoint_refused_proof(login_with_proof(&app, &proof).await, "reused jti")
            .await;
        assert_token_endpoint_refused_proof(login_with_proof(&app, "").await, "empty").await;
        let doubled = app
            .post("/token")
            .header("DPoP", key.proof("POST", &app.url("/token"), None))
            .header("DPoP", key.proof("POST", &app.url("/token"), None))
            .form(&[("username", "johndoe"), ("password", "secret")])
            .send()
            .await
            .unwrap();
        assert_token_endpoint_refused_proof(doubled, "two headers").await;
    }

    #[tokio::test]
    async fn proof_max_age_is_a_setting() {
        let app = spawn_app_with(|settings| {
            settings.dpop_proof_max_age = Duration::from_secs(5);
        })
        .await;
        let key = DpopKey::es256();
        let url = app.url("/token");
        let aged = |age: i64| {
            key.proof_with("POST", &url, None, |_, claims| {
                claims["iat"] = json!(now_secs() - age);
            })
        };

        assert_token_endpoint_refused_proof(login_with_proof(&app, &aged(10)).await, "10 s old")
            .await;
        assert_eq!(login_with_proof(&app, &aged(2)).await.status(), 200);
    }

    #[tokio::test]
    async fn every_bad_proof_on_a_protected_route_gets_the_dpop_challenge() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let (token, _) = dpop_login(&app, &key).await;
        let url = app.url("/users/me");

        let mut cases = bad_proofs(&key, "GET", &url, Some(&token));
        cases.push((
            "no ath",
            "ath",
            key.proof_with("GET", &url, Some(&token), |_, claims| {
                claims.as_object_mut().unwrap().remove("ath");
            }),
        ));
        cases.push((
            "ath of another token",
            "ath",
            key.proof_with("GET", &url, Some(&token), |_, claims| {
                claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(b"another token")));
            }),
        ));
        cases.push((
            "ath with padding",
            "ath",
            key.proof_with("GET", &url, Some(&token), |_, claims| {
                let ath = claims["ath"].as_str().unwrap().to_owned();
                claims["ath"] = json!(format!("{ath}="));
            }),
        ));
        cases.push((
            "a good proof of another key",
            "key",
            DpopKey::es256().proof("GET", &url, Some(&token)),
        ));
        for (case, _, proof) in cases {
            let response = dpop_get(&app, "/users/me", &token, Some(&proof)).send().await.unwrap();
            assert_proof_challenge(response, case).await;
        }
        let no_proof = dpop_get(&app, "/users/me", &token, None).send().await.unwrap();
        assert_proof_challenge(no_proof, "no proof").await;

        // And the token itself is fine.
        assert_eq!(dpop_call(&app, &key, "/users/me", &token).await.status(), 200);
    }

    #[tokio::test]
    async fn a_proof_is_good_once_and_for_its_own_route_only() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let (token, _) = dpop_login(&app, &key).await;
        let proof = key.proof("GET", &app.url("/users/me"), Some(&token));

        let first = dpop_get(&app, "/users/me", &token, Some(&proof)).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let again = dpop_get(&app, "/users/me", &token, Some(&proof)).send().await.unwrap();
        assert_proof_challenge(again, "the same proof again").await;

        let for_me = key.proof("GET", &app.url("/users/me"), Some(&token));
        let elsewhere = dpop_get(&app, "/users/me/items", &token, Some(&for_me))
            .send()
            .await
            .unwrap();
        assert_proof_challenge(elsewhere, "a proof for /users/me on /users/me/items").await;
    }

    // A bound token the cache holds is answered before the router, its proof checked
    // there (the fast path); one it does not goes through the OpenAPI handler. A client
    // must not be able to tell, and a proof accepted either way is accepted once.
    #[tokio::test]
    async fn a_dpop_answer_from_the_token_cache_is_the_same_as_one_from_the_database() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let (token, _) = dpop_login(&app, &key).await;
        let url = app.url("/users/me");

        let ((from_cache, cached_proof), (from_database, read_proof)) = app
            .answers_from_cache_and_database(|| async {
                let proof = key.proof("GET", &url, Some(&token));
                let response = dpop_get(&app, "/users/me", &token, Some(&proof));
                (seen(response.send().await.unwrap()).await, proof)
            })
            .await;
        // A proof accepted either way is accepted once.
        for proof in [cached_proof, read_proof] {
            let again = dpop_get(&app, "/users/me", &token, Some(&proof)).send().await.unwrap();
            assert_proof_challenge(again, "a proof accepted once, sent again").await;
        }
        assert_eq!(from_cache, from_database);
        assert_eq!(from_cache.0, 200);
        assert_eq!(
            String::from_utf8(from_cache.2).unwrap(),
            r#"{"username":"johndoe","email":"johndoe@example.com","full_name":"John Doe","disabled":false}"#
        );
    }

    // The fast path itself: it answers a bound token with a good proof once, and leaves
    // everything else to the full path (`ProofRefused` with the reason, or `Unknown`)
    // without remembering the proof.
    #[tokio::test]
    async fn the_cache_answers_a_bound_token_only_with_a_good_unused_proof_of_its_key() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let (token, _) = dpop_login(&app, &key).await;
        let url = app.url("/users/me");
        let request = |proof: &str| DpopRequest {
            header: DpopHeader::Proof(proof.to_owned()),
            method: "GET".into(),
            path: "/users/me".into(),
            refused: None,
        };
        let from_cache = |proof: &str| {
            app.auth
                .with_cached_user(&token, Some(&request(proof)), |user| user.username.clone())
                .answered()
        };

        let mut accepted = None;
        for _ in 0..20 {
            // Through the full path first, so that the cache knows the token.
            assert_eq!(dpop_call(&app, &key, "/users/me", &token).await.status(), 200);
            let proof = key.proof("GET", &url, Some(&token));
            if let Some(username) = from_cache(&proof) {
                assert_eq!(username, "johndoe");
                accepted = Some(proof);
                break;
            }
            // Not vouched for (a change not yet settled): the proof is not used up.
            assert_eq!(
                dpop_get(&app, "/users/me", &token, Some(&proof)).send().await.unwrap().status(),
                200
            );
        }
        let accepted = accepted.expect("the cache never answered");

        let refused = |proof: &str| {
            app.auth
                .with_cached_user(&token, Some(&request(proof)), |user| user.username.clone())
        };
        assert_eq!(refused(&accepted), FromCache::ProofRefused(ProofError::Replayed));
        let of_another_key = DpopKey::es256().proof("GET", &url, Some(&token));
        assert_eq!(refused(&of_another_key), FromCache::ProofRefused(ProofError::WrongKey));
        let for_items = key.proof("GET", &app.url("/users/me/items"), Some(&token));
        assert_eq!(refused(&for_items), FromCache::ProofRefused(ProofError::WrongUrl));
        assert_eq!(
            app.auth.with_cached_user(&token, None, |_| ()),
            FromCache::Unknown,
            "the bound token as a bearer token"
        );
        // And the next good proof is answered there again.
        let good = key.proof("GET", &url, Some(&token));
        assert!(from_cache(&good).is_some());
    }

    // Every refusal on a cached token comes from the full path, after the fast path
    // found the fault and remembered nothing: a proof of another key, refused, does not
    // use up anything, and the token's own key still works.
    #[tokio::test]
    async fn bad_proofs_of_a_cached_token_get_the_challenge_and_spend_nothing() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let (token, _) = dpop_login(&app, &key).await;
        let url = app.url("/users/me");
        // A good call answered early: the cache holds the token and vouches for it now.
        let answered_early = || async {
            let early = app.early_answers();
            assert_eq!(dpop_call(&app, &key, "/users/me", &token).await.status(), 200);
            app.early_answers() > early
        };
        let mut warm = false;
        for _ in 0..20 {
            if answered_early().await {
                warm = true;
                break;
            }
        }
        assert!(warm, "no good call was answered early");

        let other = DpopKey::es256();
        let of_another_key = other.proof("GET", &url, Some(&token));
        for case in ["a proof of another key", "the same proof again"] {
            let response = dpop_get(&app, "/users/me", &token, Some(&of_another_key))
                .send()
                .await
                .unwrap();
            assert_proof_challenge(response, case).await;
        }
        for (case, _, proof) in bad_proofs(&key, "GET", &url, Some(&token)) {
            if !answered_early().await {
                continue; // a change not yet settled: the early answer would not run
            }
            let refused = app.counted("simple_oauth2_dpop_proofs_total", "refused");
            let response = dpop_get(&app, "/users/me", &token, Some(&proof)).send().await.unwrap();
            assert_proof_challenge(response, case).await;
            // Refused once, by the early answer; the full path took its reason.
            assert_eq!(
                app.counted("simple_oauth2_dpop_proofs_total", "refused") - refused,
                1,
                "{case}: checked once"
            );
        }
        assert!(answered_early().await, "the token's own key still works early");

        // The reason handed on never outranks the token: an unknown token is
        // `invalid_token` whatever the early answer found about its proof.
        let handed_on = DpopRequest {
            header: DpopHeader::Proof(of_another_key.clone()),
            method: "GET".into(),
            path: "/users/me".into(),
            refused: Some(ProofError::WrongKey),
        };
        let unknown = "A".repeat(43);
        assert!(matches!(
            app.auth.current_user(&unknown, Some(&handed_on), None).await,
            Err(AccessError::InvalidToken(TokenType::Dpop))
        ));
    }

    #[tokio::test]
    async fn a_bound_token_sent_as_bearer_is_an_invalid_token_even_when_cached() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let (token, _) = dpop_login(&app, &key).await;
        // Read once with its proof, so that the token cache knows it.
        assert_eq!(dpop_call(&app, &key, "/users/me", &token).await.status(), 200);

        for path in ["/users/me", "/users/me", "/users/me/items"] {
            let response = app.get_with_token(path, &token).await;
            assert_invalid_token(response, "Bearer", path).await;
        }
    }

    #[tokio::test]
    async fn an_unbound_or_unknown_token_sent_as_dpop_is_an_invalid_token() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let bearer = app.token_for("johndoe", "secret", "").await;
        // Cached as a bearer token first: the cache must not answer for the DPoP scheme.
        assert_eq!(app.me_status(&bearer).await, 200);

        let with_good_proof = dpop_call(&app, &key, "/users/me", &bearer).await;
        assert_invalid_token(with_good_proof, "DPoP", "unbound, good proof").await;
        let without_proof = dpop_get(&app, "/users/me", &bearer, None).send().await.unwrap();
        assert_invalid_token(without_proof, "DPoP", "unbound, no proof").await;
        let unknown = "A".repeat(43);
        let response = dpop_call(&app, &key, "/users/me", &unknown).await;
        assert_invalid_token(response, "DPoP", "unknown").await;
        let empty = app.get("/users/me").header("Authorization", "DPoP ").send().await.unwrap();
        assert_invalid_token(empty, "DPoP", "DPoP with nothing after it").await;

        // The bearer token works as before.
        assert_eq!(app.me_status(&bearer).await, 200);
    }

    #[tokio::test]
    async fn a_dpop_token_without_the_scope_gets_a_dpop_insufficient_scope_challenge() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let proof = key.proof("POST", &app.url("/token"), None);
        let response = app
            .post("/token")
            .header("DPoP", proof)
            .form(&[("username", "johndoe"), ("password", "secret"), ("scope", "me")])
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap();

        let response = dpop_call(&app, &key, "/users/me/items", token).await;

        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"DPoP error="insufficient_scope", scope="items""#
        );
    }

    #[tokio::test]
    async fn refreshing_a_bound_session_with_its_key_gives_bound_tokens() {
        let app = spawn_app().await;
        let key = DpopKey::ed25519();
        let (_, refresh) = dpop_login(&app, &key).await;

        let proof = key.proof("POST", &app.url("/token"), None);
        let (status, body) = status_and_json(refresh_with(&app, &refresh, Some(&proof)).await).await;

        assert_eq!(status, 200, "{body}");
        assert_eq!(body["token_type"], "DPoP");
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(dpop_call(&app, &key, "/users/me", token).await.status(), 200);
        assert_invalid_token(app.get_with_token("/users/me", token).await, "Bearer", "as Bearer")
            .await;
        // The new refresh token is bound too.
        let next = body["refresh_token"].as_str().unwrap();
        assert_token_endpoint_refused_proof(refresh_with(&app, next, None).await, "no proof")
            .await;
    }

    #[tokio::test]
    async fn refreshing_a_bound_session_without_its_key_spends_nothing() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let (_, refresh) = dpop_login(&app, &key).await;
        let url = app.url("/token");

        assert_token_endpoint_refused_proof(refresh_with(&app, &refresh, None).await, "no proof")
            .await;
        let other = DpopKey::es256().proof("POST", &url, None);
        assert_token_endpoint_refused_proof(
            refresh_with(&app, &refresh, Some(&other)).await,
            "another key",
        )
        .await;
        let other_alg = DpopKey::ed25519().proof("POST", &url, None);
        assert_token_endpoint_refused_proof(
            refresh_with(&app, &refresh, Some(&other_alg)).await,
            "another key of another alg",
        )
        .await;
        assert_eq!(
            app.sql_i64("select count(*) from refresh_tokens where spent_at is not null").await,
            0,
            "nothing was spent"
        );

        let proof = key.proof("POST", &url, None);
        let response = refresh_with(&app, &refresh, Some(&proof)).await;
        assert_eq!(response.status(), 200, "the refresh token still works with its key");
    }

    #[tokio::test]
    async fn an_unbound_session_is_not_bound_by_a_later_refresh() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let (_, refresh) = app.tokens_for("johndoe", "secret", "").await;

        let proof = key.proof("POST", &app.url("/token"), None);
        let response = refresh_with(&app, &refresh, Some(&proof)).await;

        assert_token_endpoint_refused_proof(response, "proof for an unbound session").await;
        let (status, body) = status_and_json(refresh_with(&app, &refresh, None).await).await;
        assert_eq!((status, body["token_type"].clone()), (200, json!("bearer")));
    }

    #[tokio::test]
    async fn a_revoked_bound_token_is_an_invalid_token() {
        let app = spawn_app().await;
        let key = DpopKey::es256();
        let (token, refresh) = dpop_login(&app, &key).await;
        assert_eq!(dpop_call(&app, &key, "/users/me", &token).await.status(), 200);

        assert_eq!(app.revoke(&token).await.status(), 200);

        let response = dpop_call(&app, &key, "/users/me", &token).await;
        assert_invalid_token(response, "DPoP", "revoked access token").await;

        // Revoking the refresh token ends the session: its next access token too.
        let proof = key.proof("POST", &app.url("/token"), None);
        let body: Value = refresh_with(&app, &refresh, Some(&proof)).await.json().await.unwrap();
        let next = body["access_token"].as_str().unwrap().to_owned();
        let next_refresh = body["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(app.revoke(&next_refresh).await.status(), 200);
        let response = dpop_call(&app, &key, "/users/me", &next).await;
        assert_invalid_token(response, "DPoP", "session revoked").await;
    }

    #[tokio::test]
    async fn introspection_of_a_bound_token_says_dpop_and_its_key() {
        let app = spawn_app().await;
        let secret = add_client(&app, "billing");
        let key = DpopKey::es256();
        let (token, _) = dpop_login(&app, &key).await;
        let bearer = app.token_for("johndoe", "secret", "").await;

        let (status, body) = introspect(&app, "billing", &secret, &token).await;
        assert_eq!(status, 200);
        assert_eq!(body["active"], true);
        assert_eq!(body["token_type"], "DPoP");
        assert_eq!(body["cnf"], json!({"jkt": key.thumbprint()}));

        let (_, body) = introspect(&app, "billing", &secret, &bearer).await;
        assert_eq!(body["token_type"], "Bearer");
        assert!(body.get("cnf").is_none(), "{body}");
    }

    #[tokio::test]
    async fn the_metadata_names_the_proof_algorithms() {
        let app = spawn_app().await;

        let body: Value = app
            .get("/.well-known/oauth-authorization-server")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();

        assert_eq!(body["dpop_signing_alg_values_supported"], json!(["ES256", "EdDSA"]));
    }

    #[tokio::test]
    async fn dpop_required_refuses_token_requests_without_a_proof() {
        let app = spawn_app_with(|settings| settings.dpop_required = true).await;
        let key = DpopKey::es256();

        assert_token_endpoint_refused_proof(app.login("johndoe", "secret").await, "login").await;
        let (_, refresh) = dpop_login(&app, &key).await;
        assert_token_endpoint_refused_proof(refresh_with(&app, &refresh, None).await, "refresh")
            .await;
        let proof = key.proof("POST", &app.url("/token"), None);
        assert_eq!(refresh_with(&app, &refresh, Some(&proof)).await.status(), 200);
    }
}

/// Python's `requests-oauth2client` logs in with DPoP and reads `/users/me` through its
/// own DPoP auth handler. Needs the package; without it the test says so and passes,
/// unless `REQUIRE_PYTHON_TESTS=1` (as in CI).
const PYTHON_CLIENT: &str = r#"
import json, sys
import requests
from requests_oauth2client import OAuth2Client

base = sys.argv[1]
client = OAuth2Client(
    token_endpoint=base + "/token",
    client_id="python-dpop-client",
    dpop_bound_access_tokens=True,
    # The test server speaks plain http on a random port, which the client refuses
    # unless told this is a test.
    testing=True,
)
token = client.resource_owner_password(username="johndoe", password="secret", scope="me items")
me = requests.get(base + "/users/me", auth=token)
items = requests.get(base + "/users/me/items", auth=token)
bearer = requests.get(base + "/users/me", headers={"Authorization": "Bearer " + str(token.access_token)})
print(json.dumps({
    "token_type": token.token_type,
    "jkt": token.dpop_key.dpop_jkt,
    "access_token": str(token.access_token),
    "me": [me.status_code, me.json()],
    "items": [items.status_code, items.json()],
    "as_bearer": bearer.status_code,
}))
"#;

both_backends! {
    #[tokio::test]
    async fn python_requests_oauth2client_logs_in_with_dpop_and_reads_users_me() {
        let required = std::env::var("REQUIRE_PYTHON_TESTS").as_deref() == Ok("1");
        let importable = std::process::Command::new("python3")
            .args(["-c", "import requests_oauth2client"])
            .output()
            .is_ok_and(|output| output.status.success());
        if !importable {
            assert!(
                !required,
                "REQUIRE_PYTHON_TESTS=1 but python3 cannot import requests_oauth2client \
                 (pip install requests-oauth2client)"
            );
            say_skipped(
                "!!! The Python DPoP client test",
                "python3 cannot import requests_oauth2client (pip install requests-oauth2client)",
            );
            return;
        }
        let app = spawn_app().await;
        let address = app.address.clone();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3")
                .args(["-c", PYTHON_CLIENT, &address])
                .output()
                .expect("python3 runs")
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "the Python client failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let result: Value = serde_json::from_slice(&output.stdout).expect("JSON from the client");

        assert_eq!(result["token_type"], "DPoP", "{result}");
        assert_eq!(
            result["me"],
            json!([200, {
                "username": "johndoe",
                "email": "johndoe@example.com",
                "full_name": "John Doe",
                "disabled": false,
            }])
        );
        assert_eq!(
            result["items"],
            json!([200, [{"item_id": "Foo", "owner": "johndoe"}]])
        );
        assert_eq!(result["as_bearer"], 401, "{result}");
        // Both sides compute the same RFC 7638 thumbprint of the client's key.
        let secret = add_client(&app, "billing");
        let token = result["access_token"].as_str().unwrap();
        let (_, described) = introspect(&app, "billing", &secret, token).await;
        assert_eq!(
            described["cnf"]["jkt"], result["jkt"],
            "{described} {result}"
        );
    }
}

// Introspection of a bound token that names its client: the early answer (serde) and the
// full path's (poem-openapi) write `cnf`, `client_id` and `amr` the same way, byte for byte.
#[tokio::test]
async fn an_introspection_of_a_bound_token_from_the_caches_is_the_same_as_from_the_database() {
    let app = spawn_app().await;
    let secret = add_client(&app, "billing");
    let mobile_secret = add_client(&app, "mobile-app");
    let key = DpopKey::es256();
    let proof = key.proof("POST", &app.url("/token"), None);
    let response = app
        .post("/token")
        .header("DPoP", &proof)
        .form(&[
            ("username", "johndoe"),
            ("password", "secret"),
            ("scope", "me items"),
            ("client_id", "mobile-app"),
            ("client_secret", &mobile_secret),
        ])
        .send()
        .await
        .unwrap();
    let (status, login) = status_and_json(response).await;
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap().to_owned();

    let (from_cache, from_database) = app
        .answers_from_cache_and_database(|| introspection_seen(&app, &secret, &token))
        .await;

    assert_eq!(from_cache, from_database);
    let body: Value = serde_json::from_slice(&from_cache.2).unwrap();
    assert_eq!(body["cnf"]["jkt"], key.thumbprint(), "{body}");
    assert_eq!(
        (&body["token_type"], &body["client_id"]),
        (&json!("DPoP"), &json!("mobile-app"))
    );
}
