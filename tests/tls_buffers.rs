//! What a TLS connection holds while it waits for its peer (vendored rustls, `vendor/README.md`):
//! with nothing buffered, a read that finds no data releases the 4 KiB read buffer, so an idle
//! keep-alive connection does not keep it. Counted with an instrumented allocator, in a test
//! binary of its own so no other test allocates while it counts.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// A socket with nothing to read yet.
struct NothingYet;

impl Read for NothingYet {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

/// Moves everything `$from` has to send into `$to`.
macro_rules! transfer {
    ($from:expr, $to:expr) => {{
        let mut wire = Vec::new();
        while $from.wants_write() {
            $from.write_tls(&mut wire).unwrap();
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            $to.read_tls(&mut rd).unwrap();
            $to.process_new_packets().unwrap();
        }
    }};
}

#[test]
fn an_idle_tls_connection_holds_no_read_buffer() {
    common::init();
    let ca = common::TestCa::new("buffers-ca");
    let (cert, key) = ca.leaf(&["localhost"]);
    let server_config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(|c| c.unwrap())
                .collect(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let client_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
    let mut client =
        rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
            .unwrap();
    while client.is_handshaking() || server.is_handshaking() {
        transfer!(client, server);
        transfer!(server, client);
    }
    // A request, read whole: nothing is left buffered.
    client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    transfer!(client, server);
    let mut got = [0u8; 64];
    let n = server.reader().read(&mut got).unwrap();
    assert_eq!(&got[..n], b"GET / HTTP/1.1\r\n\r\n");

    // Waiting for the next request: the read finds nothing and gives its buffer back.
    let region = Region::new(GLOBAL);
    let err = server.read_tls(&mut NothingYet).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    let change = region.change();
    let released = change.bytes_deallocated as i64 - change.bytes_allocated as i64;
    assert!(
        released >= 4096,
        "an idle connection's read released {released} bytes ({change:?})"
    );

    // The next request is read as before.
    client
        .writer()
        .write_all(b"GET /next HTTP/1.1\r\n\r\n")
        .unwrap();
    transfer!(client, server);
    let n = server.reader().read(&mut got).unwrap();
    assert_eq!(&got[..n], b"GET /next HTTP/1.1\r\n\r\n");
}
