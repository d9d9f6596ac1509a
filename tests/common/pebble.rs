//! A real ACME server on loopback: Let's Encrypt's test server Pebble (Debian package `pebble`)
//! with `pebble-challtestsrv` as its DNS server, answering 127.0.0.1 for every name, so Pebble
//! validates challenges against the gateway's own listeners.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, TestCa};

pub struct Pebble {
    pebble: Option<Child>,
    dns: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub mgmt_port: u16,
    pub dns_port: u16,
    /// The CA of Pebble's own HTTPS certificate (for `tls.acme.ca_file`).
    pub https_ca: PathBuf,
    /// Where Pebble validates challenges: the gateway's plain-HTTP and HTTPS ports.
    pub http_port: u16,
    pub tls_port: u16,
    pub validity_seconds: u64,
    /// Pebble resolves through this server (a real one the test runs) instead of its own.
    external_dns: bool,
}

impl Pebble {
    /// Starts Pebble issuing certificates valid for `validity_seconds`, validating `http-01` on
    /// `http_port` and `tls-alpn-01` on `tls_port` of 127.0.0.1.
    pub fn start(http_port: u16, tls_port: u16, validity_seconds: u64) -> Pebble {
        Pebble::start_on(http_port, tls_port, validity_seconds, None)
    }

    /// Pebble resolving every name through the DNS server at 127.0.0.1:`dns_port` (BIND), for
    /// `dns-01`.
    pub fn start_with_dns(dns_port: u16, validity_seconds: u64) -> Pebble {
        Pebble::start_on(free_port(), free_port(), validity_seconds, Some(dns_port))
    }

    /// `dns`: a DNS server the test runs; without one, `pebble-challtestsrv` answers
    /// 127.0.0.1 for every name.
    fn start_on(http_port: u16, tls_port: u16, validity_seconds: u64, dns: Option<u16>) -> Pebble {
        assert!(
            std::path::Path::new("/usr/bin/pebble").exists(),
            "pebble is not installed (apt-get install pebble; .ci/run does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Pebble HTTPS test CA");
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let https_ca = dir.path().join("ca.pem");
        std::fs::write(&https_ca, &ca.pem).unwrap();
        let mut p = Pebble {
            pebble: None,
            dns: None,
            dir,
            port: free_port(),
            mgmt_port: free_port(),
            dns_port: dns.unwrap_or_else(free_port),
            https_ca,
            http_port,
            tls_port,
            validity_seconds,
            external_dns: dns.is_some(),
        };
        p.start_again();
        p
    }

    /// Pebble's own HTTPS certificate and key (PEM files), for a server standing in front of it.
    pub fn https_pair(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("cert.pem"),
            self.dir.path().join("key.pem"),
        )
    }

    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// (Re)starts both processes on the same ports. Pebble makes a new root on every start.
    pub fn start_again(&mut self) {
        let root = self.dir.path();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.port),
            "managementListenAddress": format!("127.0.0.1:{}", self.mgmt_port),
            "certificate": root.join("cert.pem"),
            "privateKey": root.join("key.pem"),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": self.validity_seconds,
        }});
        std::fs::write(root.join("pebble.json"), config.to_string()).unwrap();
        if self.dns.is_none() && !self.external_dns {
            let log = std::fs::File::create(root.join("dns.log")).unwrap();
            self.dns = Some(
                Command::new("pebble-challtestsrv")
                    .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                    .args(["-dns01", &format!("127.0.0.1:{}", self.dns_port)])
                    .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                    .args(["-management", &format!("127.0.0.1:{}", free_port())])
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .expect("pebble-challtestsrv"),
            );
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("pebble.log"))
            .unwrap();
        self.pebble = Some(
            Command::new("pebble")
                .arg("-config")
                .arg(root.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
                // No random validation delay, no rejected nonces, no reused authorizations:
                // every order is validated against the gateway, promptly.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env("PEBBLE_AUTHZREUSE", "0")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("pebble"),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || TcpStream::connect(("127.0.0.1", self.mgmt_port)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "pebble did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// The root that signs the certificates Pebble issues (PEM); new on every start.
    pub async fn issuing_root(&self) -> String {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&self.https_ca).unwrap()).unwrap(),
            )
            .build()
            .unwrap();
        client
            .get(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The `[tls.acme]` section for a gateway using this Pebble.
    pub fn acme_config(
        &self,
        names: &[&str],
        challenge: &str,
        storage: &std::path::Path,
    ) -> String {
        format!(
            "\n[tls.acme]\ndirectory = \"{}\"\nca_file = \"{}\"\naccept_terms = true\ncontact = [\"ops@portcullis.test\"]\nnames = {:?}\nchallenge = \"{challenge}\"\nstorage = \"{}\"\nretry_min_seconds = 1\nretry_max_seconds = 2\n",
            self.directory(),
            self.https_ca.display(),
            names,
            storage.display()
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
        if let Some(mut c) = self.dns.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
