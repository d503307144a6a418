//! OIDC JWTs against a key set file: a real RSA key made with openssl, tokens signed with it.
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantwatch_access_service::auth::{AuthError, Authenticator, Role};
use grantwatch_access_service::config::OidcConfig;
use grantwatch_types::EventTime;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

struct Key {
    pem: Vec<u8>,
    jwk: serde_json::Value,
}

fn rsa_key(dir: &std::path::Path, kid: &str) -> Key {
    let path = dir.join(format!("{kid}.pem"));
    let ok = Command::new("openssl").args(["genrsa", "-out"]).arg(&path).arg("2048").output().unwrap();
    assert!(ok.status.success(), "openssl genrsa: {}", String::from_utf8_lossy(&ok.stderr));
    let out = Command::new("openssl").args(["rsa", "-noout", "-modulus", "-in"]).arg(&path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let hex_modulus = text.trim().strip_prefix("Modulus=").unwrap();
    let n: Vec<u8> =
        (0..hex_modulus.len()).step_by(2).map(|i| u8::from_str_radix(&hex_modulus[i..i + 2], 16).unwrap()).collect();
    Key {
        pem: std::fs::read(&path).unwrap(),
        jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"}),
    }
}

const ISSUER: &str = "https://idp.example.test";
const NOW: i64 = 1_800_000_000;

#[test]
fn jwts_are_checked_for_signature_issuer_audience_time_and_algorithm() {
    let dir = tempfile::tempdir().unwrap();
    let key = rsa_key(dir.path(), "k1");
    let other = rsa_key(dir.path(), "k2");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [key.jwk]}).to_string()).unwrap();
    let cfg = OidcConfig {
        issuer: ISSUER.into(),
        audience: "grantwatch-access".into(),
        jwks_file: jwks,
        principal_claim: "email".into(),
        groups_claim: "groups".into(),
        requester_groups: vec![],
        approver_groups: vec!["secops".into()],
        admin_groups: vec!["gw-admins".into()],
        leeway_secs: 60,
    };
    let auth = Authenticator::new(None, Some(&cfg)).unwrap();
    let now = EventTime(NOW * 1000);
    let claims = |over: serde_json::Value| {
        let mut c = json!({"iss": ISSUER, "aud": "grantwatch-access", "exp": NOW + 300, "iat": NOW,
                           "email": "alice@example.test", "groups": ["secops", "eng"]});
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let sign = |pem: &[u8], kid: &str, c: serde_json::Value| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.into());
        format!("Bearer {}", encode(&h, &c, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap())
    };

    let alice = auth.authenticate(Some(&sign(&key.pem, "k1", claims(json!({})))), now).unwrap();
    assert_eq!(alice.principal.name, "alice@example.test");
    assert!(alice.has(Role::Requester) && alice.has(Role::Approver) && !alice.has(Role::Admin));
    assert_eq!(alice.principal.groups, ["secops", "eng"]);

    let refused = |token: String| auth.authenticate(Some(&token), now);
    assert_eq!(refused(sign(&key.pem, "k1", claims(json!({"exp": NOW - 61})))), Err(AuthError::Expired));
    assert!(refused(sign(&key.pem, "k1", claims(json!({"exp": NOW - 59})))).is_ok(), "within the leeway");
    assert_eq!(refused(sign(&key.pem, "k1", claims(json!({"nbf": NOW + 120})))), Err(AuthError::NotYetValid));
    assert_eq!(refused(sign(&key.pem, "k1", claims(json!({"iss": "https://evil.test"})))), Err(AuthError::Invalid));
    assert_eq!(refused(sign(&key.pem, "k1", claims(json!({"aud": "another-app"})))), Err(AuthError::Invalid));
    assert_eq!(refused(sign(&other.pem, "k1", claims(json!({})))), Err(AuthError::Invalid), "signed by another key");
    assert_eq!(refused(sign(&key.pem, "k9", claims(json!({})))), Err(AuthError::Invalid), "unknown key id");
    assert!(matches!(refused(sign(&key.pem, "k1", claims(json!({"email": null})))), Err(AuthError::NoPrincipal(_))));
    // HS256 with the public modulus as the secret: the algorithm-confusion attack.
    let secret = key.jwk["n"].as_str().unwrap().as_bytes().to_vec();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let forged = encode(&h, &claims(json!({})), &EncodingKey::from_secret(&secret)).unwrap();
    assert_eq!(refused(format!("Bearer {forged}")), Err(AuthError::Invalid));
    // Clock skew is the service's clock, not the machine's: the same token at another "now".
    let later = EventTime((NOW + 1000) * 1000);
    assert_eq!(auth.authenticate(Some(&sign(&key.pem, "k1", claims(json!({})))), later), Err(AuthError::Expired));
}
