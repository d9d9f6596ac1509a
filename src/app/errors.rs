//! Why the gateway could not start.

use std::net::SocketAddr;

use crate::{config, observability, policy, tls};

/// Why the gateway could not start. Each carries every line an operator needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("policy refused:\n{0}")]
    Policy(policy::PolicyErrors),
    #[error("certificates refused:\n{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Certs(Vec<tls::CertError>),
    #[error("{what} {addr}: cannot listen: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("production posture check failed ({} FAIL):\n{}", .0.len(), .0.join("\n"))]
    Posture(Vec<String>),
    #[error("{0}")]
    DevCerts(#[from] tls::dev::DevCertError),
    #[error("tls-alpn-01 responder: {0}")]
    AlpnChallenges(rustls::Error),
    #[error("{0}")]
    Tracing(#[from] observability::otel::OtelError),
    #[error("{0}")]
    Other(String),
}
