//! A real `redis-server` on loopback for one test: its own port and folder, no persistence.
//! It can be stopped and started again on the same port (the outage tests).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Extra server arguments (TLS, a password).
    args: Vec<String>,
    /// Serves TLS only: readiness is an accepted TCP connection.
    tls: bool,
}

impl Redis {
    /// The Redis server `.ci/run` started (`PORTCULLIS_TEST_REDIS_URL`), or a new one. Only for
    /// tests that leave the server running; tests that stop it use [`Redis::start`].
    pub fn shared() -> Redis {
        let Some(port) = std::env::var("PORTCULLIS_TEST_REDIS_URL")
            .ok()
            .and_then(|u| u.rsplit(':').next()?.split('/').next()?.parse().ok())
        else {
            return Redis::start();
        };
        Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            args: Vec::new(),
            tls: false,
        }
    }

    /// A server that speaks only TLS (certificate and key PEM files) and wants `password`.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path, password: &str) -> Redis {
        let port = super::free_port();
        let mut r = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            args: [
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-ca-cert-file",
                cert.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
                "--requirepass",
                password,
            ]
            .map(String::from)
            .to_vec(),
            tls: true,
        };
        r.spawn();
        r
    }

    /// A key prefix no other test (or earlier run) uses.
    pub fn fresh_prefix(name: &str) -> String {
        format!("{name}-{:016x}:", rand::random::<u64>())
    }

    pub fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: super::free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: Vec::new(),
            tls: false,
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let plain = ["--port", port.as_str()];
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1"])
            .args(if self.tls { &[][..] } else { &plain[..] })
            .args(&self.args)
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): install it (apt-get install -y redis-server); .ci/run does")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(if self.tls {
            TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        } else {
            self.ping()
        }) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING` with `+PONG`.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(1))).ok();
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
