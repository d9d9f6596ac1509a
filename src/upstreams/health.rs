//! One active health check of one upstream address: a TCP connect, or, with
//! `health_check_path`, an HTTP/1.1 request (over TLS for an upstream over TLS, verified as its
//! requests are) whose status must be one the policy lists. An upstream that accepts
//! connections but answers 5xx fails the HTTP check and leaves rotation.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::policy::model::{Upstream, UpstreamTarget};
use crate::policy::specs::HttpCheck;

/// Why a check failed, for the log.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no address resolved")]
    Unresolved,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS name {0:?}: {1}")]
    TlsName(String, String),
    #[error("not an HTTP response")]
    NotHttp,
    #[error("status {0} is not among the expected ones")]
    Status(u16),
}

/// Checks `address` (as the policy writes it) of `u`, connecting to `addr`.
pub async fn check(
    u: &Upstream,
    address: &str,
    addr: Option<SocketAddr>,
    timeout: Duration,
) -> Result<(), CheckError> {
    let addr = addr.ok_or(CheckError::Unresolved)?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let Some(http) = &u.health_http else {
            return Ok(());
        };
        let sni = match &u.target {
            UpstreamTarget::External { sni, .. } => sni.as_str(),
            _ => "",
        };
        let host = http.host.as_deref().unwrap_or(match http.tls {
            Some(_) if !sni.is_empty() => sni,
            _ => address,
        });
        let request = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portcullis-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            http.method, http.path
        );
        let status = match &http.tls {
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(sni.to_string())
                    .map_err(|e| CheckError::TlsName(sni.to_string(), e.to_string()))?;
                let mut s = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await?;
                exchange(&mut s, request.as_bytes()).await?
            }
            None => {
                let mut s = tcp;
                exchange(&mut s, request.as_bytes()).await?
            }
        };
        passes(http, status)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| CheckError::Timeout(timeout))?
}

fn passes(http: &HttpCheck, status: u16) -> Result<(), CheckError> {
    if http.passes(status) {
        Ok(())
    } else {
        Err(CheckError::Status(status))
    }
}

/// Sends the request and reads the status line's code.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    request: &[u8],
) -> Result<u16, CheckError> {
    s.write_all(request).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < 1024 {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    status_of(&buf).ok_or(CheckError::NotHttp)
}

/// The code of an `HTTP/1.x NNN …` status line.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_strictly() {
        assert_eq!(
            status_of(b"HTTP/1.1 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(status_of(b"HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_of(b""), None);
    }
}
