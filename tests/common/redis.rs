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
        }
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
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
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
        while !self.ping() {
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
