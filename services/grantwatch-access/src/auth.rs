//! Who is calling: a static bearer token (stored as its SHA-256 hash) or an OIDC JWT checked against
//! the issuer's key set, and what the caller may do (roles).
//!
//! Nothing here logs a token, and errors never quote one: a failed authentication says only which
//! check failed.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use grantwatch_access_core::Principal;
use grantwatch_access_core::validate::is_principal_name;
use grantwatch_types::EventTime;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::OidcConfig;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Ask for access; cancel or revoke one's own requests; read one's own.
    Requester,
    /// Approve or deny under the rules that name them; read every request.
    Approver,
    /// Everything an approver may, and abandon a grant whose revocation cannot complete.
    Admin,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    pub roles: BTreeSet<Role>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// Approvers and administrators see every request; requesters their own.
    pub fn sees_all(&self) -> bool {
        self.has(Role::Approver)
    }
}

/// Why authentication failed (the API answers 401 with this text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token (Authorization: Bearer <token>)")]
    Missing,
    #[error("the token is not valid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token names no usable principal in claim {0:?}")]
    NoPrincipal(String),
}

/// The tokens file:
///
/// ```toml
/// [[token]]
/// principal = "alice"
/// roles = ["requester", "approver"]
/// groups = ["secops"]
/// sha256 = "<64 hex digits: the SHA-256 of the token>"
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    principal: String,
    roles: Vec<Role>,
    #[serde(default)]
    groups: Vec<String>,
    sha256: String,
}

struct StaticToken {
    hash: [u8; 32],
    caller: Caller,
}

struct Oidc {
    cfg: OidcConfig,
    keys: JwkSet,
}

/// Checks bearer tokens.
pub struct Authenticator {
    tokens: Vec<StaticToken>,
    oidc: Option<Oidc>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("static_tokens", &self.tokens.len())
            .field("oidc_issuer", &self.oidc.as_ref().map(|o| o.cfg.issuer.as_str()))
            .finish()
    }
}

/// The most groups taken from a token, and the longest group name: a token cannot make the service
/// hold much.
const MAX_GROUPS: usize = 256;
const MAX_GROUP_CHARS: usize = 256;
/// Longest bearer token read.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The SHA-256 of a token, in hex: what the tokens file stores.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (256 bits, hex).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("gwa_{}", hex::encode(bytes))
}

impl Authenticator {
    pub fn new(tokens_file: Option<&Path>, oidc: Option<&OidcConfig>) -> Result<Authenticator> {
        let mut tokens = Vec::new();
        if let Some(path) = tokens_file {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let file: TokensFile = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
            for (i, e) in file.token.into_iter().enumerate() {
                let at = || format!("{}: token {}", path.display(), i + 1);
                if !is_principal_name(&e.principal) {
                    bail!("{}: principal {:?} is not a usable name", at(), e.principal);
                }
                if e.roles.is_empty() {
                    bail!("{}: roles must name at least one of requester, approver, admin", at());
                }
                let mut hash = [0u8; 32];
                hex::decode_to_slice(e.sha256.trim(), &mut hash)
                    .map_err(|_| anyhow::anyhow!("{}: sha256 must be 64 hex digits", at()))?;
                let caller = Caller {
                    principal: Principal::with_groups(e.principal, e.groups),
                    roles: e.roles.into_iter().collect(),
                };
                tokens.push(StaticToken { hash, caller });
            }
        }
        let oidc = match oidc {
            Some(cfg) => {
                let text = std::fs::read_to_string(&cfg.jwks_file)
                    .with_context(|| format!("reading {}", cfg.jwks_file.display()))?;
                let keys: JwkSet = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a JSON Web Key Set", cfg.jwks_file.display()))?;
                if keys.keys.is_empty() {
                    bail!("{}: the key set is empty", cfg.jwks_file.display());
                }
                Some(Oidc { cfg: cfg.clone(), keys })
            }
            None => None,
        };
        Ok(Authenticator { tokens, oidc })
    }

    /// The caller an `Authorization` header value names, judged at `now`.
    pub fn authenticate(&self, authorization: Option<&str>, now: EventTime) -> Result<Caller, AuthError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid);
        }
        // A JWT has two dots; a static token has none.
        if token.bytes().filter(|&b| b == b'.').count() == 2 {
            return match &self.oidc {
                Some(oidc) => oidc.verify(token, now),
                None => Err(AuthError::Invalid),
            };
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, in constant time, so the answer's timing says nothing of which
        // entry came close.
        let mut found: Option<&StaticToken> = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&hash)) {
                found = Some(t);
            }
        }
        found.map(|t| t.caller.clone()).ok_or(AuthError::Invalid)
    }
}

/// Asymmetric algorithms only: a key set holds public keys, and accepting HS256 would let anyone who
/// knows a public key sign with it.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Oidc {
    fn verify(&self, token: &str, now: EventTime) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::Invalid);
        }
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid),
            None if self.keys.keys.len() == 1 => self.keys.keys.first(),
            None => None,
        }
        .ok_or(AuthError::Invalid)?;
        if jwk.common.key_algorithm.is_some_and(|a| a.to_string() != format!("{:?}", header.alg)) {
            return Err(AuthError::Invalid);
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|_| AuthError::Invalid)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.cfg.issuer]);
        validation.set_audience(&[&self.cfg.audience]);
        // Time is judged below against the service's clock, not the library's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
            .map_err(|_| AuthError::Invalid)?;
        let claims = data.claims;
        let leeway = i64::try_from(self.cfg.leeway_secs).unwrap_or(i64::MAX);
        let now_secs = now.0.div_euclid(1000);
        let exp = claims.get("exp").and_then(serde_json::Value::as_i64).ok_or(AuthError::Invalid)?;
        if now_secs > exp.saturating_add(leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_i64().ok_or(AuthError::Invalid)?;
            if now_secs < nbf.saturating_sub(leeway) {
                return Err(AuthError::NotYetValid);
            }
        }
        let name = claims
            .get(&self.cfg.principal_claim)
            .and_then(serde_json::Value::as_str)
            .filter(|n| is_principal_name(n))
            .ok_or_else(|| AuthError::NoPrincipal(self.cfg.principal_claim.clone()))?;
        let groups: Vec<String> = match claims.get(&self.cfg.groups_claim) {
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(serde_json::Value::as_str)
                .filter(|g| g.chars().count() <= MAX_GROUP_CHARS)
                .take(MAX_GROUPS)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let member = |list: &[String]| list.iter().any(|g| groups.contains(g));
        let mut roles = BTreeSet::new();
        if self.cfg.requester_groups.is_empty() || member(&self.cfg.requester_groups) {
            roles.insert(Role::Requester);
        }
        if member(&self.cfg.approver_groups) {
            roles.insert(Role::Approver);
        }
        if member(&self.cfg.admin_groups) {
            roles.insert(Role::Admin);
        }
        Ok(Caller { principal: Principal::with_groups(name, groups), roles })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens_file(dir: &Path, entries: &[(&str, &str, &[&str], &[&str])]) -> std::path::PathBuf {
        let mut text = String::new();
        for (principal, token, roles, groups) in entries {
            text.push_str(&format!(
                "[[token]]\nprincipal = {principal:?}\nroles = {roles:?}\ngroups = {groups:?}\nsha256 = {:?}\n",
                token_hash(token)
            ));
        }
        let path = dir.join("tokens.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn static_tokens_are_matched_by_hash_and_carry_their_roles() {
        let dir = tempfile::tempdir().unwrap();
        let f = tokens_file(
            dir.path(),
            &[("alice", "tok-alice", &["requester", "approver"], &["secops"]), ("root", "tok-root", &["admin"], &[])],
        );
        let auth = Authenticator::new(Some(&f), None).unwrap();
        let now = EventTime(0);
        let alice = auth.authenticate(Some("Bearer tok-alice"), now).unwrap();
        assert_eq!(alice.principal.name, "alice");
        assert_eq!(alice.principal.groups, ["secops"]);
        assert!(alice.has(Role::Approver) && !alice.has(Role::Admin));
        let root = auth.authenticate(Some("Bearer tok-root"), now).unwrap();
        assert!(root.has(Role::Approver), "admin implies every role");
        assert_eq!(auth.authenticate(None, now), Err(AuthError::Missing));
        assert_eq!(auth.authenticate(Some("Basic abc"), now), Err(AuthError::Missing));
        assert_eq!(auth.authenticate(Some("Bearer tok-alicf"), now), Err(AuthError::Invalid));
        assert_eq!(auth.authenticate(Some("Bearer a.b.c"), now), Err(AuthError::Invalid), "no OIDC configured");
        let debug = format!("{auth:?}");
        assert!(!debug.contains("tok-") && !debug.contains(&token_hash("tok-alice")), "{debug}");
    }

    #[test]
    fn a_tokens_file_with_a_bad_entry_is_refused_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t.toml");
        std::fs::write(&f, "[[token]]\nprincipal = \"a\"\nroles = [\"requester\"]\nsha256 = \"xyz\"\n").unwrap();
        let e = Authenticator::new(Some(&f), None).unwrap_err().to_string();
        assert!(e.contains("token 1") && e.contains("64 hex"), "{e}");
        std::fs::write(&f, "[[token]]\nprincipal = \"system\"\nroles = [\"admin\"]\nsha256 = \"00\"\n").unwrap();
        assert!(Authenticator::new(Some(&f), None).is_err());
        std::fs::write(&f, "[[token]]\nprincipal = \"a\"\nroles = [\"root\"]\nsha256 = \"00\"\n").unwrap();
        assert!(Authenticator::new(Some(&f), None).is_err(), "unknown role");
    }

    #[test]
    fn new_tokens_are_random_and_long() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
    }
}
