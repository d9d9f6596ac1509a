//! A real BIND 9 (`named`, Debian package `bind9`) on loopback, primary for one zone that takes
//! RFC 2136 updates signed with one TSIG key: the DNS server that `dns-01` publishes to and
//! Pebble resolves through.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Bind {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    pub zone: String,
    pub key_name: String,
    /// Base64, as `tsig-keygen` writes it.
    pub secret: String,
}

impl Bind {
    pub fn start(zone: &str) -> Bind {
        assert!(
            std::path::Path::new("/usr/sbin/named").exists(),
            "named is not installed (apt-get install bind9; .ci/run does)"
        );
        use base64::Engine;
        let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let d = dir.path().display().to_string();
        let key_name = "portcullis-acme".to_string();
        std::fs::write(
            dir.path().join("named.conf"),
            format!(
                r#"options {{
    directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    recursion no;
    dnssec-validation no;
    allow-query {{ any; }};
    notify no;
}};
key "{key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};
controls {{ }};
zone "{zone}" {{
    type primary;
    file "{d}/zone.db";
    allow-update {{ key "{key_name}"; }};
}};
"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("zone.db"),
            format!(
                "$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\n\
                 ns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let child = Command::new("/usr/sbin/named")
            .args(["-g", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("named");
        let b = Bind {
            child: Some(child),
            dir,
            port,
            zone: zone.into(),
            key_name,
            secret,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() || !b.log().contains("running") {
            assert!(
                Instant::now() < deadline,
                "named did not start:\n{}",
                b.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// The TXT records at `name`, as `dig` prints them.
    pub fn txt(&self, name: &str) -> String {
        let out = Command::new("dig")
            .args([
                "+short",
                "@127.0.0.1",
                "-p",
                &self.port.to_string(),
                "TXT",
                name,
            ])
            .output()
            .expect("dig (bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The `[tls.acme.dns]` section for a gateway, with the secret in `env_name`.
    pub fn acme_dns_config(&self, env_name: &str) -> String {
        format!(
            "\n[tls.acme.dns]\nserver = \"127.0.0.1:{}\"\nzone = \"{}\"\ntsig_key = \"{}\"\ntsig_secret = \"env:{env_name}\"\nttl_seconds = 5\n",
            self.port, self.zone, self.key_name
        )
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
