//! Token and key helpers for authentication tests: ES256 keys from rcgen, JWT minting with
//! arbitrary headers (including hostile ones), and a real JWKS HTTP server on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An ES256 key pair.
pub struct EcKey {
    pub private_pem: String,
    pub public_pem: String,
    /// Uncompressed point: 0x04 || x || y.
    pub point: Vec<u8>,
}

impl EcKey {
    pub fn new() -> EcKey {
        let k = rcgen::KeyPair::generate().unwrap();
        EcKey {
            private_pem: k.serialize_pem(),
            public_pem: k.public_key_pem(),
            point: k.public_key_raw().to_vec(),
        }
    }

    pub fn jwk(&self, kid: &str) -> serde_json::Value {
        serde_json::json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&self.point[1..33]), "y": b64(&self.point[33..65]),
        })
    }

    pub fn sign(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = kid.map(str::to_string);
        jsonwebtoken::encode(
            &h,
            claims,
            &EncodingKey::from_ec_pem(self.private_pem.as_bytes()).unwrap(),
        )
        .unwrap()
    }
}

pub fn hs256(secret: &[u8], kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A token with a hand-written header and no valid signature (`alg: none` and friends).
pub fn raw_token(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    signature: &[u8],
) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// A JWKS endpoint on loopback that counts its hits and can be stopped.
pub struct JwksServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub body: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(body: String) -> JwksServer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), body).await
    }

    pub async fn start_on(addr: SocketAddr, body: String) -> JwksServer {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let body = Arc::new(Mutex::new(body));
        let (h, b) = (hits.clone(), body.clone());
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let (h, b) = (h.clone(), b.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let body = b.lock().unwrap().clone();
                    let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        JwksServer {
            addr,
            hits,
            body,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops listening: the port refuses connections from now on.
    pub fn stop(&self) {
        self.task.abort();
    }
}

pub fn jwks_body(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}
