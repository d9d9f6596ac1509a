//! The shared store behind Redis Sentinel and in a Redis Cluster, each started for real on
//! loopback: the primary is killed while requests flow, and the tests check that global limits
//! keep their count, lockouts and revocations survive (a replica started after the failover
//! loads them), the failure mode applies only while no primary answers, and the metrics and the
//! log say what happened. A Sentinel that names no primary leaves the store down, so limits
//! follow their failure mode.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::redis::{Cluster, Redis, Sentinel};
use common::*;

const SECRET: &str = "shared-topologies-test-secret-0123456789ab";

/// Addresses the tests present through `X-Forwarded-For` (the gateway trusts loopback), so
/// the quota, the load, the lockout and the revoked token never share a client.
const QUOTA_CLIENT: &str = "198.51.100.1";
const LOAD_CLIENT: &str = "198.51.100.2";
const LOCKED_CLIENT: &str = "198.51.100.3";
/// A new address for each use of the revoked token: it counts as a failed authentication.
fn revoked_client() -> String {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);
    format!(
        "203.0.113.{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// `store`: the `[shared_state]` lines that name the store.
fn policy(store: &str, prefix: &str) -> String {
    format!(
        r#"
[network]
trusted_proxies = ["127.0.0.1"]

[shared_state]
{store}
key_prefix = "{prefix}"
command_timeout_ms = 200
connect_timeout_ms = 300

[auth]
default_provider = "jwt"
backoff = {{ max_failures = 3, window_seconds = 60, lockout_seconds = 120, max_lockout_seconds = 120 }}

[[auth.issuers]]
name = "hs"
issuer = "https://hs.test"
audiences = ["api"]
algorithms = ["HS256"]
secret = "{SECRET}"

[[upstreams]]
name = "worker"
kind = "worker"

[[routes]]
name = "whoami"
path_prefix = "/whoami"
upstream = "worker"

[[routes]]
name = "models"
path_prefix = "/v1/"
upstream = "worker"
public = true

# Exact (small limits ask the store on every request) and refused while the store is down.
[[limits]]
name = "quota"
key = ["ip"]
requests = 20
per_seconds = 600
burst = 20
scope = "global"
failure_mode = "fail_closed"
routes = ["models"]

# Never reached: it only makes every authenticated request ask the store.
[[limits]]
name = "busy"
key = ["ip"]
requests = 100
per_seconds = 1
burst = 100
scope = "global"
failure_mode = "fail_closed"
routes = ["whoami"]
"#
    )
}

fn token(jti: &str) -> String {
    common::auth::hs256(
        SECRET.as_bytes(),
        None,
        &serde_json::json!({
            "iss": "https://hs.test", "aud": "api", "sub": "alice", "jti": jti,
            "exp": common::auth::now() + 3600,
        }),
    )
}

fn urls(list: &[String]) -> String {
    list.iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn get(g: &Gateway, path: &str, client: &str, bearer: Option<&str>) -> u16 {
    let mut r = g
        .client(true)
        .get(g.url(path))
        .header("x-forwarded-for", client);
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().status().as_u16()
}

async fn statuses(
    g: &Gateway,
    path: &str,
    client: &str,
    bearer: Option<&str>,
    n: usize,
) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(g, path, client, bearer).await);
    }
    out
}

use common::metric_in as metric;

fn cli(g: &Gateway, args: &[&str]) -> String {
    let (ok, text) = try_cli(g, args);
    assert!(ok, "{args:?}: {text}");
    text
}

/// `portcullis ARGS` with `g`'s configuration: whether it succeeded, and what it printed.
fn try_cli(g: &Gateway, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--config")
        .arg(g.dir.path().join("portcullis.toml"))
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Before the failover: 8 of the quota's 20 spent, a lockout running, a token revoked.
async fn spend_lock_and_revoke(g: &Gateway) {
    assert_eq!(
        statuses(g, "/v1/models", QUOTA_CLIENT, None, 8).await,
        [200; 8]
    );
    let bad = format!("{}x", token("bad"));
    assert_eq!(
        statuses(g, "/whoami", LOCKED_CLIENT, Some(&bad), 4).await,
        [401, 401, 401, 429]
    );
    cli(g, &["token", "revoke", "--jti", "gone"]);
    let revoked = token("gone");
    eventually(Duration::from_secs(2), "revocation applied", || async {
        (get(g, "/whoami", &revoked_client(), Some(&revoked)).await == 401).then_some(())
    })
    .await;
}

/// After the failover, at `g`: the quota's count went on (12 left), the lockout holds even for
/// a valid token, and the revoked token is refused.
async fn all_survived(g: &Gateway, quota_left: usize) {
    let mut want = vec![200; quota_left];
    want.extend([429; 3]);
    assert_eq!(
        statuses(g, "/v1/models", QUOTA_CLIENT, None, quota_left + 3).await,
        want,
        "the quota's count survives the failover"
    );
    let valid = token("valid");
    assert_eq!(
        get(g, "/whoami", LOCKED_CLIENT, Some(&valid)).await,
        429,
        "the lockout survives the failover"
    );
    assert_eq!(
        get(g, "/whoami", &revoked_client(), Some(&token("gone"))).await,
        401,
        "the revocation survives the failover"
    );
    assert_eq!(get(g, "/whoami", LOAD_CLIENT, Some(&valid)).await, 200);
}

/// Authenticated requests from one client, one every 20 ms, each with the time it was sent and
/// the time its answer came.
struct Load {
    seen: Arc<Mutex<Vec<(Instant, Instant, u16)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(g: &Gateway) -> Load {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (c, url, t, out) = (
            g.client(true),
            g.url("/whoami"),
            token("load"),
            seen.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let at = Instant::now();
                let s = c
                    .get(&url)
                    .header("x-forwarded-for", LOAD_CLIENT)
                    .bearer_auth(&t)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                out.lock().unwrap().push((at, Instant::now(), s));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Load { seen, task }
    }

    /// Waits until at least `n` requests were sent after `at`.
    async fn wait_for_sent_after(&self, at: Instant, n: usize) {
        eventually(
            Duration::from_secs(10),
            "requests after recovery",
            || async {
                let seen = self.seen.lock().unwrap();
                (seen.iter().filter(|(sent, _, _)| *sent > at).count() >= n).then_some(())
            },
        )
        .await;
    }

    /// Stops; checks every answer was 200 or the failure mode's 503, that no 503 was answered
    /// before the kill (a request sent just before it may meet the outage), and that no 503
    /// answered a request sent after `recovered`. Returns how many 503s there were.
    fn finish(self, killed: Instant, recovered: Instant) -> usize {
        self.task.abort();
        let seen = self.seen.lock().unwrap();
        let refused: Vec<_> = seen.iter().filter(|(_, _, s)| *s == 503).collect();
        assert!(
            seen.iter().all(|(_, _, s)| *s == 200 || *s == 503),
            "{:?}",
            seen.iter().map(|x| x.2).collect::<Vec<_>>()
        );
        for (at, answered, _) in &refused {
            assert!(
                *answered >= killed,
                "a 503 answered {:?} before the primary was killed",
                killed.duration_since(*answered)
            );
            assert!(
                *at <= recovered,
                "a 503 {:?} after the store was back",
                at.duration_since(recovered)
            );
        }
        let after = seen.iter().filter(|(at, _, _)| *at > recovered).count();
        assert!(after >= 10, "only {after} requests after recovery");
        println!(
            "{} requests, {} refused by the failure mode, {after} after recovery",
            seen.len(),
            refused.len()
        );
        refused.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_keeps_limits_lockouts_and_revocations() {
    let mut s = Sentinel::start("pc");
    let prefix = Redis::fresh_prefix("sentinel");
    let store = format!(
        "sentinels = [{}]\nsentinel_master = \"pc\"",
        urls(&s.urls())
    );
    let text = policy(&store, &prefix);
    let a = Gateway::start(Options::with_policy(&text)).await;
    wait_up(&a, Duration::from_secs(5)).await;
    assert!(
        a.log()
            .contains(&format!("\"server\":\"127.0.0.1:{}\"", s.primary.port)),
        "{}",
        a.log()
    );
    spend_lock_and_revoke(&a).await;
    s.primary.wait_for_replicas(1);

    let load = Load::start(&a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    s.primary.kill();
    let replica = s.replica.port;
    let (_, took) = eventually(
        Duration::from_secs(30),
        "failover and reconnect",
        || async {
            let m = a.metrics().await;
            (s.named_primary() == Some(replica)
                && metric(&m, "portcullis_shared_state_up") == 1.0
                && metric(&m, "portcullis_shared_state_reconnects_total") >= 1.0)
                .then_some(())
        },
    )
    .await;
    let recovered = Instant::now();
    println!("back on the promoted replica {took:?} after the kill");
    load.wait_for_sent_after(recovered, 10).await;
    let refused = load.finish(killed, recovered);
    assert!(refused > 0, "the load never met the outage");

    let m = a.metrics().await;
    assert!(metric(&m, "portcullis_shared_state_errors_total") >= 1.0);
    assert!(
        m.contains("portcullis_shared_state_fallbacks_total{mode=\"fail_closed\"}"),
        "{m}"
    );
    let log = a.log();
    assert!(
        log.contains("shared state moved to another server")
            && log.contains(&format!("\"to\":\"127.0.0.1:{replica}\"")),
        "{log}"
    );
    assert_eq!(log.matches("shared state unreachable").count(), 1, "{log}");
    all_survived(&a, 12).await;

    // A replica started after the failover loads the lockout and the revocation from the new
    // primary, and shares the quota's count.
    let b = Gateway::start(Options::with_policy(&text)).await;
    wait_up(&b, Duration::from_secs(5)).await;
    all_survived(&b, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_names_no_primary_leaves_limits_to_their_failure_mode() {
    let s = Sentinel::start("pc");
    let store = format!(
        "sentinels = [{}]\nsentinel_master = \"elsewhere\"",
        urls(&s.urls())
    );
    let g = Gateway::start(Options::with_policy(policy(
        &store,
        &Redis::fresh_prefix("nowhere"),
    )))
    .await;
    let t = token("t");
    let r = g
        .client(true)
        .get(g.url("/whoami"))
        .header("x-forwarded-for", LOAD_CLIENT)
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limit_unavailable");
    assert_eq!(body["limit"], "busy");
    let m = g.metrics().await;
    assert_eq!(metric(&m, "portcullis_shared_state_up"), 0.0);
    let (_, _) = eventually(Duration::from_secs(3), "the reason logged", || async {
        g.log()
            .contains("names no primary for \\\"elsewhere\\\"")
            .then_some(())
    })
    .await;
    // The log names sentinels by address only.
    assert!(g.log().contains(&format!("127.0.0.1:{}", s.sentinels[0].1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_state_and_keeps_it_through_a_failover() {
    let mut cluster = Cluster::start();
    let prefix = Redis::fresh_prefix("cluster");
    let store = format!("cluster_nodes = [{}]", urls(&cluster.urls()));
    let text = policy(&store, &prefix);
    let a = Gateway::start(Options::with_policy(&text)).await;
    let b = Gateway::start(Options::with_policy(&text)).await;
    wait_up(&a, Duration::from_secs(5)).await;
    wait_up(&b, Duration::from_secs(5)).await;

    // Shared between the replicas: the quota, the lockout (announced), the revocation.
    spend_lock_and_revoke(&a).await;
    assert_eq!(
        statuses(&b, "/v1/models", QUOTA_CLIENT, None, 2).await,
        [200, 200]
    );
    assert_eq!(
        get(&b, "/whoami", LOCKED_CLIENT, Some(&token("valid"))).await,
        429
    );
    assert_eq!(
        get(&b, "/whoami", &revoked_client(), Some(&token("gone"))).await,
        401
    );

    // Kill the primary that holds the quota's bucket, once its replica has it.
    let holder = cluster
        .holder_of(&format!("{prefix}rl:quota:*"))
        .expect("the quota's bucket is on a primary");
    holder.wait_for_replicas(1);
    let port = holder.port;
    for n in &cluster.nodes {
        if n.ping() && n.cli(&["ROLE"]).starts_with("master") {
            n.wait_for_replicas(1);
        }
    }
    let load = Load::start(&a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    cluster.node_mut(port).kill();
    let (_, took) = eventually(Duration::from_secs(30), "cluster failover", || async {
        let primaries = cluster.primaries();
        (primaries.len() == 3 && !primaries.contains(&port) && cluster.state_ok()).then_some(())
    })
    .await;
    println!("cluster failed over {took:?} after the kill");
    // Both gateways answer from the promoted replica.
    let valid = token("valid");
    eventually(Duration::from_secs(10), "requests served again", || async {
        let ok = get(&a, "/whoami", LOAD_CLIENT, Some(&valid)).await == 200
            && metric(&a.metrics().await, "portcullis_shared_state_up") == 1.0;
        ok.then_some(())
    })
    .await;
    let recovered = Instant::now();
    load.wait_for_sent_after(recovered, 10).await;
    load.finish(killed, recovered);

    all_survived(&a, 10).await;
    let c = Gateway::start(Options::with_policy(&text)).await;
    wait_up(&c, Duration::from_secs(5)).await;
    all_survived(&c, 0).await;
}

/// The revocation list is read only from the node that owns its slot. With that node and its
/// replica down, `token revocations` fails; it never prints another node's empty answer as the
/// list (a gateway's resync read the same way would drop every revocation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_list_is_never_read_from_a_node_that_does_not_hold_it() {
    let mut cluster = Cluster::start();
    let prefix = Redis::fresh_prefix("unowned");
    let store = format!("cluster_nodes = [{}]", urls(&cluster.urls()));
    let g = Gateway::start(Options::with_policy(policy(&store, &prefix))).await;
    wait_up(&g, Duration::from_secs(5)).await;
    cli(&g, &["token", "revoke", "--jti", "gone"]);
    let listed = cli(&g, &["token", "revocations"]);
    assert!(listed.contains("1 revocation(s)"), "{listed}");

    let holder = cluster
        .holder_of(&format!("{{{prefix}revoked}}:*"))
        .expect("the revocation is on a primary")
        .port;
    let replica = cluster
        .replica_of(holder)
        .expect("the holder has a replica");
    cluster.node_mut(replica).kill();
    cluster.node_mut(holder).kill();
    for _ in 0..3 {
        let (ok, text) = try_cli(&g, &["token", "revocations"]);
        assert!(!ok, "listed without its holder: {text}");
        assert!(!text.contains("revocation(s)"), "{text}");
    }
}

/// While the list's slot is being migrated to another primary, neither half is read as the
/// list: `token revocations` fails (or, once the move is done, lists all four), never the part
/// that has moved or the part left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revocation_list_is_never_read_from_half_a_migrating_slot() {
    let cluster = Cluster::start();
    let prefix = Redis::fresh_prefix("moving");
    let store = format!("cluster_nodes = [{}]", urls(&cluster.urls()));
    let g = Gateway::start(Options::with_policy(policy(&store, &prefix))).await;
    wait_up(&g, Duration::from_secs(5)).await;
    for jti in ["a", "b", "c", "d"] {
        cli(&g, &["token", "revoke", "--jti", jti]);
    }
    let listed = cli(&g, &["token", "revocations"]);
    assert!(listed.contains("4 revocation(s)"), "{listed}");

    let tag = format!("{{{prefix}revoked}}:");
    let from = cluster
        .holder_of(&format!("{tag}*"))
        .expect("the list is on a primary");
    let primaries = cluster.primaries();
    let to = cluster
        .nodes
        .iter()
        .find(|n| n.port != from.port && primaries.contains(&n.port))
        .expect("another primary");
    let slot = from.cli(&["CLUSTER", "KEYSLOT", &tag]);
    let (from_id, to_id) = (from.cli(&["CLUSTER", "MYID"]), to.cli(&["CLUSTER", "MYID"]));
    let importing = to.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
    assert_eq!(importing, "OK");
    let migrating = from.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
    assert_eq!(migrating, "OK");
    let port = to.port.to_string();
    let key = format!("{tag}jti:a");
    let moved = from.cli(&["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", &key]);
    assert_eq!(moved, "OK");
    for _ in 0..2 {
        let (ok, text) = try_cli(&g, &["token", "revocations"]);
        assert!(
            !ok || text.contains("4 revocation(s)"),
            "half a slot: {text}"
        );
    }

    // The gateway resyncs when its notification connection drops: that read fails too, and
    // the list it holds is kept (a revoked token is refused, or meets the store's failure
    // mode; never served).
    let errors = metric(&g.metrics().await, "portcullis_shared_state_errors_total");
    for n in cluster.nodes.iter().filter(|n| n.ping()) {
        n.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    }
    eventually(Duration::from_secs(10), "a resync tried", || async {
        // One error for the dropped connection, then the resync after reconnecting: a second
        // error when it fails, a reconnect when it succeeds.
        let m = g.metrics().await;
        (metric(&m, "portcullis_shared_state_errors_total") >= errors + 2.0
            || metric(&m, "portcullis_shared_state_reconnects_total") >= 1.0)
            .then_some(())
    })
    .await;
    for jti in ["a", "b", "c", "d"] {
        let st = get(&g, "/whoami", &revoked_client(), Some(&token(jti))).await;
        assert!(st == 401 || st == 503, "revoked {jti}: {st}\n{}", g.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_settings_are_checked_with_their_line() {
    for (store, want) in [
        (
            "url = \"redis://127.0.0.1:1\"\ncluster_nodes = [\"redis://127.0.0.1:2\"]",
            "needs exactly one of url (one server), sentinels (Redis Sentinel) or cluster_nodes",
        ),
        (
            "sentinels = [\"redis://127.0.0.1:1\"]",
            "shared_state.sentinel_master: required with sentinels",
        ),
        (
            "url = \"redis://127.0.0.1:1\"\nsentinel_master = \"pc\"",
            "shared_state.sentinel_master: only with sentinels",
        ),
        (
            "cluster_nodes = []",
            "shared_state.cluster_nodes: name at least one URL",
        ),
        (
            "cluster_nodes = [\"redis://127.0.0.1:1/3\"]",
            "a Redis Cluster has only database 0, not 3",
        ),
        (
            "cluster_nodes = [\"redis://127.0.0.1:1\", \"rediss://127.0.0.1:2\"]",
            "mixes redis:// and rediss:// URLs",
        ),
        (
            "sentinels = [\"http://127.0.0.1:1\"]\nsentinel_master = \"pc\"",
            "shared_state.sentinels: must start with redis:// or rediss://",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.toml"), policy(store, "p:")).unwrap();
        let (ok, text) = check_policy_dir(dir.path());
        assert!(!ok, "{store}: accepted");
        assert!(text.contains(want), "{store}: {text}");
        assert!(
            text.contains("policy.toml:"),
            "no file:line for {store}: {text}"
        );
    }
    // Braces would move keys between cluster slots.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        policy("url = \"redis://127.0.0.1:1\"", "a{b}:"),
    )
    .unwrap();
    let (ok, text) = check_policy_dir(dir.path());
    assert!(!ok && text.contains("without spaces or braces"), "{text}");
}
