//! JWT verification for the `jwt` provider (issuers with HS secrets, PEM public keys or JWKS)
//! and the `room` provider (room tokens signed by the policy's room keys, chosen by `kid`).
//! Every failure collapses to `AuthFailure::Invalid` (or `KeysUnavailable`) so responses never
//! tell an attacker which check failed; the log gets the reason, never the token.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::Value;

use super::identity::{safe_capability_name, AuthFailure, Identity, Provider, MAX_TOKEN_BYTES};
use super::jwks::{JwksRegistry, JwksSettings};

/// A compiled JWT issuer.
pub struct Issuer {
    pub name: Arc<str>,
    /// Expected `iss`; tokens are routed to the issuer whose `iss` they carry.
    pub iss: Option<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub secret: Option<DecodingKey>,
    /// Length in bytes of the HMAC secret, for the posture check.
    pub secret_len: Option<usize>,
    /// PEM public keys, optionally named by `kid`.
    pub keys: Vec<(Option<String>, DecodingKey, Algorithm)>,
    pub jwks: Option<(String, JwksSettings)>,
    pub leeway: u64,
    pub required_claims: Vec<String>,
    pub subject_claim: String,
    pub capabilities_claim: String,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .field("iss", &self.iss)
            .field("algorithms", &self.algorithms)
            .field("keys", &self.keys.iter().map(|k| &k.0).collect::<Vec<_>>())
            .field("jwks", &self.jwks.as_ref().map(|j| &j.0))
            .finish()
    }
}

/// One room-token key. Verification material always; signing material when the policy has it
/// (used by `portcullis token mint`).
pub struct RoomKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
    pub encoding: Option<EncodingKey>,
    /// Length in bytes of an HMAC secret, for the posture check.
    pub secret_len: Option<usize>,
}

impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.encoding.is_some())
            .finish()
    }
}

#[derive(Debug, Default)]
pub struct RoomKeys {
    pub issuer: String,
    pub keys: HashMap<String, RoomKey>,
}

/// Counts signature verifications (cache misses that reached the crypto).
#[derive(Debug, Default)]
pub struct VerifyStats {
    pub signature_checks: AtomicU64,
}

pub fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

pub fn parse_algorithm(s: &str) -> Option<Algorithm> {
    match s {
        "none" | "None" | "NONE" => None,
        other => other.parse::<Algorithm>().ok(),
    }
}

/// Cheap structural checks before any parsing: size, three base64url segments.
fn well_formed(token: &str) -> bool {
    token.len() <= MAX_TOKEN_BYTES
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && token.split('.').all(|s| !s.is_empty())
}

/// Whether the (unverified) header carries `crit`, `jku`, `jwk`, `x5u` or `x5c`.
fn names_its_own_key(token: &str) -> bool {
    let Some(h) = token.split('.').next() else {
        return true;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h) else {
        return true;
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => ["crit", "jku", "jwk", "x5u", "x5c"]
            .iter()
            .any(|k| m.contains_key(*k)),
        _ => true,
    }
}

/// The header of a structurally sound token that names no key of its own. Keys named or
/// embedded by the token itself are never trusted, and `crit` extensions are not understood, so
/// such tokens are refused (RFC 7515 §4.1.11).
fn checked_header(token: &str) -> Result<Header, AuthFailure> {
    if !well_formed(token) || names_its_own_key(token) {
        return Err(AuthFailure::Invalid);
    }
    jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Invalid)
}

/// The unverified payload, only to route the token to its issuer.
fn peek_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The token's capabilities. A name outside the policy's own name rule is dropped: it can match
/// no policy capability, and forwarded upstream it could read as another name or as several.
fn capabilities_from(claims: &Value, claim: &str) -> Vec<Box<str>> {
    let names: Vec<&str> = match claims.get(claim) {
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        Some(Value::String(s)) => s.split_whitespace().collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if safe_capability_name(name) {
            out.push(Box::from(name));
        } else {
            tracing::info!(
                target: "portcullis::security",
                claim,
                "token capability that is not a policy capability name ([a-z0-9._-], 1 to 64) ignored"
            );
        }
    }
    out
}

fn validation(
    alg: Algorithm,
    leeway: u64,
    iss: Option<&str>,
    aud: &[String],
    required: &[&str],
) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = leeway;
    v.validate_nbf = true;
    v.validate_exp = true;
    if let Some(i) = iss {
        v.set_issuer(&[i]);
    }
    if aud.is_empty() {
        v.validate_aud = false;
    } else {
        v.set_audience(aud);
    }
    let mut req: Vec<&str> = vec!["exp"];
    req.extend(
        required
            .iter()
            .filter(|c| matches!(**c, "exp" | "nbf" | "aud" | "iss" | "sub")),
    );
    v.set_required_spec_claims(&req);
    v
}

/// Verifies a JWT against the policy's issuers.
pub async fn verify_jwt(
    token: &str,
    issuers: &[Issuer],
    jwks: &JwksRegistry,
    stats: &VerifyStats,
) -> Result<Identity, AuthFailure> {
    let header = checked_header(token)?;
    let claimed_iss =
        peek_claims(token).and_then(|c| c.get("iss").and_then(|v| v.as_str()).map(str::to_string));
    let issuer = match issuers {
        [only] if only.iss.is_none() || only.iss == claimed_iss => only,
        many => many
            .iter()
            .find(|i| i.iss.is_some() && i.iss == claimed_iss)
            .ok_or(AuthFailure::Invalid)?,
    };
    let alg = header.alg;
    if !issuer.algorithms.contains(&alg) {
        return Err(AuthFailure::Invalid);
    }
    let required: Vec<&str> = issuer.required_claims.iter().map(|s| s.as_str()).collect();
    let v = validation(
        alg,
        issuer.leeway,
        issuer.iss.as_deref(),
        &issuer.audiences,
        &required,
    );

    // Candidate keys, most specific first.
    let mut candidates: Vec<&DecodingKey> = Vec::new();
    let jwks_key;
    if is_hmac(alg) {
        candidates.extend(issuer.secret.as_ref());
    } else {
        match &header.kid {
            Some(kid) => {
                candidates.extend(
                    issuer
                        .keys
                        .iter()
                        .filter(|(k, _, a)| k.as_deref() == Some(kid.as_str()) && *a == alg)
                        .map(|(_, d, _)| d),
                );
                if candidates.is_empty() {
                    if let Some((url, settings)) = &issuer.jwks {
                        jwks_key = jwks.get(url).key(kid, *settings).await?;
                        if jwks_key.alg.is_some_and(|a| a != alg) {
                            return Err(AuthFailure::Invalid);
                        }
                        candidates.push(&jwks_key.key);
                    }
                }
            }
            None => candidates.extend(
                issuer
                    .keys
                    .iter()
                    .filter(|(_, _, a)| *a == alg)
                    .map(|(_, d, _)| d),
            ),
        }
    }
    let mut last = AuthFailure::Invalid;
    for key in candidates {
        stats.signature_checks.fetch_add(1, Ordering::Relaxed);
        match jsonwebtoken::decode::<Value>(token, key, &v) {
            Ok(data) => {
                let claims = data.claims;
                for c in &issuer.required_claims {
                    if claims.get(c).is_none_or(|v| v.is_null()) {
                        tracing::debug!(issuer = %issuer.name, claim = %c, "token lacks a required claim");
                        return Err(AuthFailure::Invalid);
                    }
                }
                let subject = claims
                    .get(&issuer.subject_claim)
                    .and_then(|s| s.as_str())
                    .filter(|s| !s.is_empty() && s.len() <= 256)
                    .ok_or(AuthFailure::Invalid)?;
                return Ok(Identity {
                    subject: Arc::from(subject),
                    provider: Provider::Jwt,
                    all_capabilities: false,
                    capabilities: Arc::from(capabilities_from(&claims, &issuer.capabilities_claim)),
                    room: None,
                    expires_at: claims.get("exp").and_then(|e| e.as_u64()),
                    verified_by: Some(issuer.name.clone()),
                    token_id: claim_str(&claims, "jti"),
                    key_id: header.kid.as_deref().map(Arc::from),
                });
            }
            Err(e) => {
                tracing::debug!(issuer = %issuer.name, reason = ?e.kind(), "token refused");
                last = AuthFailure::Invalid;
            }
        }
    }
    Err(last)
}

/// Verifies a room token: `kid` must name a room key, and `sub`, `room`, `exp` are required.
pub fn verify_room_token(
    token: &str,
    keys: &RoomKeys,
    leeway: u64,
    stats: &VerifyStats,
) -> Result<Identity, AuthFailure> {
    let header = checked_header(token)?;
    let kid = header.kid.as_deref().ok_or(AuthFailure::Invalid)?;
    let key = keys.keys.get(kid).ok_or(AuthFailure::Invalid)?;
    if key.algorithm != header.alg {
        return Err(AuthFailure::Invalid);
    }
    let v = validation(key.algorithm, leeway, Some(&keys.issuer), &[], &["sub"]);
    stats.signature_checks.fetch_add(1, Ordering::Relaxed);
    let data = jsonwebtoken::decode::<Value>(token, &key.decoding, &v).map_err(|e| {
        tracing::debug!(kid, reason = ?e.kind(), "room token refused");
        AuthFailure::Invalid
    })?;
    let c = data.claims;
    let subject = c
        .get("sub")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .ok_or(AuthFailure::Invalid)?;
    let room = c
        .get("room")
        .and_then(|s| s.as_str())
        .filter(|s| !s.is_empty())
        .ok_or(AuthFailure::Invalid)?;
    Ok(Identity {
        subject: Arc::from(subject),
        provider: Provider::Room,
        all_capabilities: false,
        capabilities: Arc::from(capabilities_from(&c, "caps")),
        room: Some(Arc::from(room)),
        expires_at: c.get("exp").and_then(|e| e.as_u64()),
        verified_by: Some(Arc::from(kid)),
        token_id: claim_str(&c, "jti"),
        key_id: Some(Arc::from(kid)),
    })
}

/// A short string claim (the `jti`), if present.
fn claim_str(claims: &Value, name: &str) -> Option<Arc<str>> {
    claims
        .get(name)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty() && s.len() <= 256)
        .map(Arc::from)
}

/// Why a room token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no room key with kid {0:?} in the policy")]
    UnknownKid(String),
    #[error("the policy has no room key with signing material")]
    NoSigningKey,
    #[error("room key {0:?} has no signing material in the policy")]
    NotSigning(String),
    #[error("{0}")]
    Encode(#[from] jsonwebtoken::errors::Error),
}

/// Why a token does not decode (`token inspect`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectError {
    #[error("not a JWT: expected three dot-separated segments")]
    NotThreeSegments,
    /// `header` or `payload`.
    #[error("{0} is not base64url")]
    NotBase64(&'static str),
    #[error("{0} is not JSON")]
    NotJson(&'static str),
}

/// Signs a room token with a policy key (the CLI's `token mint`).
pub fn mint_room_token(
    keys: &RoomKeys,
    kid: Option<&str>,
    subject: &str,
    room: &str,
    caps: &[String],
    ttl_seconds: u64,
) -> Result<String, MintError> {
    let key = match kid {
        Some(k) => keys
            .keys
            .get(k)
            .ok_or_else(|| MintError::UnknownKid(k.to_string()))?,
        None => {
            let mut signing: Vec<&RoomKey> = keys
                .keys
                .values()
                .filter(|k| k.encoding.is_some())
                .collect();
            signing.sort_by(|a, b| a.kid.cmp(&b.kid));
            signing.pop().ok_or(MintError::NoSigningKey)?
        }
    };
    let enc = key
        .encoding
        .as_ref()
        .ok_or_else(|| MintError::NotSigning(key.kid.clone()))?;
    let mut header = Header::new(key.algorithm);
    header.kid = Some(key.kid.clone());
    let now = crate::clock::now_unix();
    let claims = serde_json::json!({
        "iss": keys.issuer,
        "sub": subject,
        "room": room,
        "caps": caps,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        // A token id, so one token can be revoked (`token revoke --jti`).
        "jti": format!("{:032x}", rand::random::<u128>()),
    });
    Ok(jsonwebtoken::encode(&header, &claims, enc)?)
}

/// Decodes a token's header and claims without verifying (for `token inspect`).
pub fn inspect(token: &str) -> Result<(Value, Value), InspectError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InspectError::NotThreeSegments);
    };
    let dec = |s: &str, what: &'static str| -> Result<Value, InspectError> {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| InspectError::NotBase64(what))?;
        serde_json::from_slice(&b).map_err(|_| InspectError::NotJson(what))
    };
    Ok((dec(h, "header")?, dec(p, "payload")?))
}
