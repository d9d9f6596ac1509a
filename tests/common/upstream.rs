//! A plain HTTP/1.1 upstream for tests: answers `200 ok` to every request head it reads,
//! records each `\r\n\r\n`-terminated block it receives (heads, and chunked bodies), counts the
//! connections it accepted, and can be killed like a crashed process (listener and every open
//! connection dropped) or close its open connections and keep listening.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct TestUpstream {
    pub port: u16,
    /// Every block received, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TestUpstream {
    /// Listens on `port` (0 = any; a port it had before `kill` to come back).
    pub async fn start(port: u16) -> TestUpstream {
        Self::start_with(port, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await
    }

    /// Like `start`, answering every request head with `response`.
    pub async fn start_with(port: u16, response: &'static [u8]) -> TestUpstream {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s2, c2, a2) = (seen.clone(), conns.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                a2.fetch_add(1, Ordering::SeqCst);
                let seen = s2.clone();
                let h = tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&got[..end]).to_string());
                            got.drain(..end + 4);
                            if s.write_all(response).await.is_err() {
                                return;
                            }
                        }
                    }
                });
                c2.lock().unwrap().push(h.abort_handle());
            }
        });
        TestUpstream {
            port,
            seen,
            accepted,
            task,
            conns,
        }
    }

    /// How many connections it accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection (as an upstream closing idle keep-alive connections) and
    /// keeps listening.
    pub fn close_connections(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Stops listening and drops every open connection.
    /// Stops listening and closes every connection; the port is free again on return (the
    /// accept task, which owns the listener, has ended).
    pub async fn kill(self) {
        self.task.abort();
        self.close_connections();
        let _ = self.task.await;
    }
}

/// An HTTPS/1.1 upstream for tests: presents `cert`/`key` (PEM), answers `200 tls-ok` to every
/// request head, and counts completed handshakes. `tls12_only` limits it to TLS 1.2.
pub struct TlsTestUpstream {
    pub port: u16,
    pub handshakes: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsTestUpstream {
    pub async fn start(cert: &str, key: &str, tls12_only: bool) -> TlsTestUpstream {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let versions: &[&'static rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h2 = handshakes.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, handshakes) = (acceptor.clone(), h2.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    handshakes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    loop {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            got.drain(..end + 4);
                            let resp = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\ntls-ok";
                            if tls.write_all(resp).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        TlsTestUpstream {
            port,
            handshakes,
            task,
        }
    }
}

impl Drop for TlsTestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
