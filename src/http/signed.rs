//! Signed URLs: `?expires=<unix>&kid=<key id>&sig=<base64url HMAC-SHA256>` over the method, the
//! canonical path, the expiry and the key id. A route with `signed_urls = true` admits a request
//! carrying a valid, unexpired signature in place of authentication. Several keys may be listed
//! so an old key keeps verifying while a new one signs (rotation). Verification is constant time
//! (`ring::hmac::verify`); no other query parameter may ride along unsigned.

use base64::Engine;
use ring::hmac;

#[derive(Debug)]
pub struct SigningKey {
    pub id: Box<str>,
    key: hmac::Key,
}

impl SigningKey {
    pub fn new(id: &str, secret: &[u8]) -> SigningKey {
        SigningKey {
            id: id.into(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }
}

#[derive(Debug)]
pub struct SignedUrls {
    pub keys: Vec<SigningKey>,
    /// Index of the key new signatures use.
    pub sign_with: usize,
    /// Longest lifetime a URL may be signed for, seconds.
    pub max_ttl: u64,
}

/// Why a signed URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFailure {
    Malformed,
    Expired,
    UnknownKey,
    Invalid,
}

impl SignatureFailure {
    pub fn code(self) -> &'static str {
        match self {
            SignatureFailure::Malformed => "signature_malformed",
            SignatureFailure::Expired => "signature_expired",
            SignatureFailure::UnknownKey => "signature_unknown_key",
            SignatureFailure::Invalid => "signature_invalid",
        }
    }
    pub fn body(self) -> &'static [u8] {
        match self {
            SignatureFailure::Malformed => br#"{"error":"signature_malformed"}"#,
            SignatureFailure::Expired => br#"{"error":"signature_expired"}"#,
            SignatureFailure::UnknownKey => br#"{"error":"signature_unknown_key"}"#,
            SignatureFailure::Invalid => br#"{"error":"signature_invalid"}"#,
        }
    }
}

/// Whether a query string carries a signature attempt.
pub fn has_signature(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|kv| {
            kv.starts_with("sig=") || kv.starts_with("expires=") || kv.starts_with("kid=")
        })
    })
}

fn message(method: &str, path: &str, expires: u64, kid: &str) -> String {
    let method = if method == "HEAD" { "GET" } else { method };
    format!("{method}\n{path}\n{expires}\n{kid}")
}

/// A signing key the policy does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no signing key {0:?} in the policy")]
pub struct UnknownKey(pub String);

impl SignedUrls {
    /// The query string for `method path`, valid until `expires` (unix seconds), signed with
    /// `kid` (default: the signing key).
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        expires: u64,
        kid: Option<&str>,
    ) -> Result<String, UnknownKey> {
        let key = match kid {
            Some(k) => self
                .keys
                .iter()
                .find(|x| &*x.id == k)
                .ok_or_else(|| UnknownKey(k.to_string()))?,
            None => &self.keys[self.sign_with],
        };
        let tag = hmac::sign(&key.key, message(method, path, expires, &key.id).as_bytes());
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
        Ok(format!("expires={expires}&kid={}&sig={sig}", key.id))
    }

    /// Verifies the signature in `query` for `method path` at `now` (unix seconds).
    pub fn verify(
        &self,
        method: &str,
        path: &str,
        query: &str,
        now: u64,
    ) -> Result<(), SignatureFailure> {
        let (mut expires, mut kid, mut sig) = (None, None, None);
        for kv in query.split('&') {
            let (k, v) = kv.split_once('=').ok_or(SignatureFailure::Malformed)?;
            let slot = match k {
                "expires" => &mut expires,
                "kid" => &mut kid,
                "sig" => &mut sig,
                // Anything else would ride along unsigned.
                _ => return Err(SignatureFailure::Malformed),
            };
            if slot.replace(v).is_some() {
                return Err(SignatureFailure::Malformed);
            }
        }
        let (Some(expires), Some(kid), Some(sig)) = (expires, kid, sig) else {
            return Err(SignatureFailure::Malformed);
        };
        let expires: u64 = expires.parse().map_err(|_| SignatureFailure::Malformed)?;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| SignatureFailure::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| &*k.id == kid)
            .ok_or(SignatureFailure::UnknownKey)?;
        hmac::verify(
            &key.key,
            message(method, path, expires, kid).as_bytes(),
            &sig,
        )
        .map_err(|_| SignatureFailure::Invalid)?;
        if now >= expires {
            return Err(SignatureFailure::Expired);
        }
        if expires - now > self.max_ttl {
            // Signed by a key holder, but for longer than the policy allows.
            return Err(SignatureFailure::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls() -> SignedUrls {
        SignedUrls {
            keys: vec![
                SigningKey::new("k2", b"new secret new secret new secret"),
                SigningKey::new("k1", b"old secret old secret old secret"),
            ],
            sign_with: 0,
            max_ttl: 3600,
        }
    }

    #[test]
    fn round_trip_and_rotation() {
        let u = urls();
        let q = u.sign("GET", "/a.png", 1000, None).unwrap();
        assert!(q.starts_with("expires=1000&kid=k2&sig="));
        assert_eq!(u.verify("GET", "/a.png", &q, 999), Ok(()));
        assert_eq!(u.verify("HEAD", "/a.png", &q, 999), Ok(()));
        let old = u.sign("GET", "/a.png", 1000, Some("k1")).unwrap();
        assert_eq!(u.verify("GET", "/a.png", &old, 999), Ok(()));
    }

    #[test]
    fn tampering_expiry_and_unknown_keys_fail() {
        let u = urls();
        let q = u.sign("GET", "/a.png", 1000, None).unwrap();
        assert_eq!(
            u.verify("GET", "/a.png", &q, 1000),
            Err(SignatureFailure::Expired)
        );
        assert_eq!(
            u.verify("GET", "/b.png", &q, 10),
            Err(SignatureFailure::Invalid)
        );
        assert_eq!(
            u.verify("PUT", "/a.png", &q, 10),
            Err(SignatureFailure::Invalid)
        );
        let longer = q.replace("expires=1000", "expires=2000");
        assert_eq!(
            u.verify("GET", "/a.png", &longer, 10),
            Err(SignatureFailure::Invalid)
        );
        let other_kid = q.replace("kid=k2", "kid=k1");
        assert_eq!(
            u.verify("GET", "/a.png", &other_kid, 10),
            Err(SignatureFailure::Invalid)
        );
        let unknown = q.replace("kid=k2", "kid=k9");
        assert_eq!(
            u.verify("GET", "/a.png", &unknown, 10),
            Err(SignatureFailure::UnknownKey)
        );
        assert_eq!(
            u.verify("GET", "/a.png", &format!("{q}&x=1"), 10),
            Err(SignatureFailure::Malformed)
        );
        assert_eq!(
            u.verify("GET", "/a.png", &format!("{q}&sig=AAAA"), 10),
            Err(SignatureFailure::Malformed)
        );
        assert_eq!(
            u.verify("GET", "/a.png", "expires=1000&kid=k2", 10),
            Err(SignatureFailure::Malformed)
        );
        // Valid signature, but for longer than max_ttl from now.
        let far = u.sign("GET", "/a.png", 100_000, None).unwrap();
        assert_eq!(
            u.verify("GET", "/a.png", &far, 10),
            Err(SignatureFailure::Expired)
        );
    }

    #[test]
    fn signature_params_are_detected() {
        assert!(has_signature(Some("expires=1&kid=a&sig=b")));
        assert!(has_signature(Some("a=1&sig=b")));
        assert!(!has_signature(Some("access_token=x")));
        assert!(!has_signature(None));
    }
}
