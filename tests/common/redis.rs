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

impl Redis {
    /// A server with extra arguments (a replica, a cluster node).
    pub fn start_with(args: &[String]) -> Redis {
        let mut r = Redis {
            child: None,
            port: super::free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: args.to_vec(),
            tls: false,
        };
        r.spawn();
        r
    }

    /// A replica of the server at `primary`.
    pub fn replica_of(primary: u16) -> Redis {
        Redis::start_with(&[
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.to_string(),
        ])
    }

    /// One command through `redis-cli`; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Waits until `replicas` replicas have every write made so far (`WAIT`).
    pub fn wait_for_replicas(&self, replicas: u32) {
        let got = self.cli(&["WAIT", &replicas.to_string(), "5000"]);
        assert!(
            got.parse::<u32>().unwrap_or(0) >= replicas,
            "WAIT {replicas}: {got}"
        );
    }

    /// Kills the server at once (no shutdown, no save): a crashed primary.
    pub fn kill(&mut self) {
        self.stop();
    }
}

/// One command through `redis-cli` to the server at `port`; its output, trimmed.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (package redis-tools, installed with redis-server)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A primary, one replica and three sentinels (quorum 2) watching it as `master`, on
/// loopback, tuned to fail over within a few seconds.
pub struct Sentinel {
    pub primary: Redis,
    pub replica: Redis,
    pub sentinels: Vec<(Child, u16)>,
    pub master: String,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub fn start(master: &str) -> Sentinel {
        let primary = Redis::start();
        let replica = Redis::replica_of(primary.port);
        let dir = tempfile::tempdir().unwrap();
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = super::free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {master} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {master} 500\n\
                     sentinel failover-timeout {master} 3000\n\
                     sentinel parallel-syncs {master} 1\n",
                    dir.path().display(),
                    primary.port
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            sentinels.push((child, port));
        }
        let s = Sentinel {
            primary,
            replica,
            sentinels,
            master: master.into(),
            _dir: dir,
        };
        // Ready: every sentinel names the primary and has found the replica and the others.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = s.sentinels.iter().all(|(_, p)| {
                let m = cli(*p, &["SENTINEL", "master", master]);
                m.contains(&s.primary.port.to_string())
                    && cli(*p, &["SENTINEL", "replicas", master])
                        .contains(&s.replica.port.to_string())
                    && field(&m, "num-other-sentinels") == Some("2")
            }) && s.replica.cli(&["ROLE"]).contains("connected");
            if ready {
                return s;
            }
            assert!(Instant::now() < deadline, "sentinels not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `redis://` URLs of the sentinels.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(_, p)| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The port the sentinels name as primary now (by the first that answers).
    pub fn named_primary(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(_, p)| {
            let out = cli(*p, &["SENTINEL", "get-master-addr-by-name", &self.master]);
            out.lines().nth(1)?.trim().parse().ok()
        })
    }
}

/// The value after `name` in `redis-cli`'s one-item-per-line output of a map.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim() == name {
            return lines.next().map(str::trim);
        }
    }
    None
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        for (c, _) in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Redis Cluster of three primaries, each with one replica, on loopback, with a one-second
/// node timeout so a failover takes a few seconds.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes: Vec<Redis> = (0..6)
            .map(|_| {
                Redis::start_with(&[
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-port".into(),
                    super::free_port().to_string(),
                    "--cluster-node-timeout".into(),
                    "1000".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let c = Cluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.nodes.iter().all(|n| {
            n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                && n.cli(&["CLUSTER", "NODES"])
                    .lines()
                    .filter(|l| l.contains("connected"))
                    .count()
                    == 6
        }) || c.primaries().len() != 3
            || !c.replicas_synced()
        {
            assert!(Instant::now() < deadline, "cluster not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn replicas_synced(&self) -> bool {
        self.nodes.iter().all(|n| {
            let role = n.cli(&["ROLE"]);
            !role.starts_with("slave") || role.contains("connected")
        })
    }

    /// Seed URLs: the nodes created as primaries.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .take(3)
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// Ports of the nodes that are primaries now, as a live node sees them.
    pub fn primaries(&self) -> Vec<u16> {
        let Some(view) = self.nodes.iter().find(|n| n.ping()) else {
            return Vec::new();
        };
        view.cli(&["CLUSTER", "NODES"])
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|l| {
                let addr = l.split_whitespace().nth(1)?;
                addr.split(['@', ','])
                    .next()?
                    .rsplit(':')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// The node that holds `pattern`'s keys now (by `SCAN` on each live primary).
    pub fn holder_of(&self, pattern: &str) -> Option<&Redis> {
        let primaries = self.primaries();
        self.nodes.iter().find(|n| {
            primaries.contains(&n.port) && !n.cli(&["--scan", "--pattern", pattern]).is_empty()
        })
    }

    /// The port of the replica of the primary at `port`, as that primary sees it.
    pub fn replica_of(&self, port: u16) -> Option<u16> {
        let nodes = self.node(port).cli(&["CLUSTER", "NODES"]);
        let id = nodes
            .lines()
            .find(|l| l.contains("myself"))?
            .split_whitespace()
            .next()?;
        nodes.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let port = f.get(1)?.split(['@', ',']).next()?.rsplit(':').next()?;
            (f.get(3) == Some(&id) && f[2].contains("slave")).then(|| port.parse().ok())?
        })
    }

    pub fn node(&self, port: u16) -> &Redis {
        self.nodes.iter().find(|n| n.port == port).unwrap()
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Redis {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    pub fn state_ok(&self) -> bool {
        self.nodes
            .iter()
            .filter(|n| n.ping())
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    }
}
