//! State shared by replicas through Redis, when the policy has a `[shared_state]` section:
//! global rate limits (GCRA in one atomic script, with a small local reservation so a large limit
//! does not cost a round trip per request), auth-failure lockouts counted across replicas, and
//! the token revocation list. Without the section everything stays in-process.
//!
//! Redis is never on the path of a request that does not need it: lockouts and revocations are
//! pushed to every replica over pub/sub and checked locally. While Redis is unreachable each
//! global limit follows its failure mode (`fail_open`: this replica's local limit applies;
//! `fail_closed`: 503), failures are counted locally, and a supervisor reconnects in the
//! background. Each change of state is logged once.

pub mod conn;
pub mod scripts;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use redis::AsyncCommands;

use conn::Conn;
pub use conn::{describe, StoreError};

use crate::auth::revoked::{Entries, Kind, Revocations};
use crate::limits::{AuthBackoff, BackoffSpec, LimitSpec};
pub use crate::policy::specs::SharedSettings;

impl SharedSettings {
    fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    fn fingerprint(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// One configuration's connection and whether it works.
struct Active {
    settings: SharedSettings,
    fingerprint: u64,
    conn: ArcSwapOption<Conn>,
    up: AtomicBool,
    /// What was last logged: 0 nothing yet, 1 reachable, 2 unreachable (one line per change,
    /// including a store that is unreachable from the start).
    logged: std::sync::atomic::AtomicU8,
    /// Set when a new configuration replaces this one: its supervisor stops.
    retired: AtomicBool,
    /// The server the last session reached (`host:port`).
    address: Mutex<Option<String>>,
}

/// What a global limit decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalVerdict {
    Allowed {
        remaining: u32,
    },
    Limited {
        retry_after: Duration,
    },
    /// The store could not answer; the limit's failure mode decides.
    Unavailable,
}

/// What a failed authentication did to the shared lockout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedFailure {
    Counted,
    Started(Duration),
    AlreadyLocked(Duration),
    Unavailable,
}

#[derive(Debug, Default)]
pub struct SharedStats {
    pub errors: AtomicU64,
    pub fallback_open: AtomicU64,
    pub fallback_closed: AtomicU64,
    pub round_trips: AtomicU64,
    pub reserved_hits: AtomicU64,
    pub notifications: AtomicU64,
    /// Sessions established after an earlier one ended (a failover, a restart, a cut).
    pub reconnects: AtomicU64,
}

struct Reservation {
    tokens: u32,
    taken: Instant,
    /// One request is fetching the next batch; others spend what is left, or ask for a single
    /// token when nothing is, so a replica holds at most one and a half batches per key.
    refilling: bool,
}

/// Stores a fetched batch (or just clears `refilling`) however the fetching request ends.
struct Refill<'a> {
    shard: &'a Mutex<HashMap<String, Reservation>>,
    key: &'a str,
    granted: u32,
}

impl Drop for Refill<'_> {
    fn drop(&mut self) {
        let mut m = self.shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = m.get_mut(self.key) {
            r.refilling = false;
            if self.granted > 0 {
                // Older tokens still count (at most half a batch); all live one more second.
                if r.taken.elapsed() >= RESERVATION_LIFE {
                    r.tokens = 0;
                }
                r.tokens = r.tokens.saturating_add(self.granted);
                r.taken = Instant::now();
            }
        }
    }
}

const RESERVATION_SHARDS: usize = 16;
const RESERVATION_MAX_KEYS: usize = 100_000;
const RESERVATION_LIFE: Duration = Duration::from_secs(1);

pub struct SharedStore {
    active: ArcSwapOption<Active>,
    pub revocations: Arc<Revocations>,
    backoff: Arc<AuthBackoff>,
    /// Closes the open sessions the revocation list now names; run after it gains entries.
    on_revoked: OnRevoked,
    handle: tokio::runtime::Handle,
    reservations: Vec<Mutex<HashMap<String, Reservation>>>,
    pub stats: SharedStats,
}

/// What the store runs when the revocation list gains entries: the owner of the open sessions
/// closes those it now revokes.
pub type OnRevoked = Box<dyn Fn(&Revocations) + Send + Sync>;

impl SharedStore {
    pub fn new(
        revocations: Arc<Revocations>,
        backoff: Arc<AuthBackoff>,
        on_revoked: OnRevoked,
        handle: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Arc::new(SharedStore {
            active: ArcSwapOption::empty(),
            revocations,
            backoff,
            on_revoked,
            handle,
            reservations: (0..RESERVATION_SHARDS)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            stats: SharedStats::default(),
        })
    }

    /// Follows the policy's `[shared_state]`: connects on first sight, reconnects when it
    /// changes, disconnects when it goes.
    pub fn configure(self: &Arc<Self>, settings: Option<&SharedSettings>) {
        let current = self.active.load_full();
        let fp = settings.map(|s| s.fingerprint());
        if current.as_ref().map(|a| a.fingerprint) == fp {
            return;
        }
        if let Some(old) = &current {
            old.retired.store(true, Ordering::Release);
            old.conn.store(None);
        }
        let Some(settings) = settings else {
            self.active.store(None);
            tracing::info!(target: "portcullis::shared", "shared state off: limits, lockouts and revocations are local");
            return;
        };
        let active = Arc::new(Active {
            settings: settings.clone(),
            fingerprint: fp.unwrap_or(0),
            conn: ArcSwapOption::empty(),
            up: AtomicBool::new(false),
            logged: std::sync::atomic::AtomicU8::new(0),
            retired: AtomicBool::new(false),
            address: Mutex::new(None),
        });
        self.active.store(Some(active.clone()));
        tracing::info!(target: "portcullis::shared", endpoint = %settings.endpoint(), prefix = %settings.prefix, "shared state: connecting");
        self.handle.spawn(self.clone().supervise(active));
    }

    /// Whether a store is configured and answering.
    pub fn is_up(&self) -> bool {
        self.active
            .load()
            .as_ref()
            .is_some_and(|a| a.up.load(Ordering::Relaxed))
    }

    pub fn is_configured(&self) -> bool {
        self.active.load().is_some()
    }

    /// The live connection and the key prefix, for other users of the store (ACME storage).
    pub fn connection(&self) -> Option<(Conn, String)> {
        let (a, c) = self.live()?;
        Some((c, a.settings.prefix.clone()))
    }

    /// The live connection, when the store is up.
    fn live(&self) -> Option<(Arc<Active>, Conn)> {
        let a = self.active.load_full()?;
        if !a.up.load(Ordering::Relaxed) {
            return None;
        }
        let c = a.conn.load_full()?;
        Some((a, (*c).clone()))
    }

    fn failed(&self, a: &Active, what: &str, e: &str) {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        a.up.store(false, Ordering::Release);
        if a.logged.swap(2, Ordering::AcqRel) != 2 {
            tracing::warn!(
                target: "portcullis::shared",
                endpoint = %a.settings.endpoint(),
                during = what,
                error = e,
                "shared state unreachable: global limits follow their failure mode, lockouts are counted locally"
            );
        }
    }

    fn mark_up(&self, a: &Active) {
        a.up.store(true, Ordering::Release);
        if a.logged.swap(1, Ordering::AcqRel) != 1 {
            tracing::info!(target: "portcullis::shared", endpoint = %a.settings.endpoint(), "shared state reachable");
        }
    }

    /// Checks a global limit: a token from this replica's reservation, else one batch from the
    /// store. When a reservation falls under half a batch, the request that notices fetches the
    /// next batch (after taking its own token locally), so others keep spending meanwhile.
    pub async fn check_limit(&self, spec: &LimitSpec, key: &str) -> GlobalVerdict {
        let batch = spec.reserve_batch();
        let shard = &self.reservations[shard_of(key)];
        let mut refill = None;
        // Set when this request was admitted from the reservation and only tops it up.
        let mut admitted: Option<u32> = None;
        if batch > 1 {
            let mut m = shard.lock().unwrap_or_else(|p| p.into_inner());
            let room = m.len() < RESERVATION_MAX_KEYS / RESERVATION_SHARDS;
            let fetch = match m.get_mut(key) {
                Some(r) if r.tokens > 0 && r.taken.elapsed() < RESERVATION_LIFE => {
                    r.tokens -= 1;
                    self.stats.reserved_hits.fetch_add(1, Ordering::Relaxed);
                    if r.refilling || r.tokens >= batch / 2 {
                        return GlobalVerdict::Allowed {
                            remaining: r.tokens,
                        };
                    }
                    r.refilling = true;
                    admitted = Some(r.tokens);
                    true
                }
                Some(r) if !r.refilling => {
                    r.refilling = true;
                    r.tokens = 0;
                    true
                }
                Some(_) => false,
                None if room => {
                    m.insert(
                        key.to_string(),
                        Reservation {
                            tokens: 0,
                            taken: Instant::now(),
                            refilling: true,
                        },
                    );
                    true
                }
                None => false,
            };
            if fetch {
                refill = Some(Refill {
                    shard,
                    key,
                    granted: 0,
                });
            }
        }
        let want = if refill.is_some() { batch } else { 1 };
        let verdict = |v: GlobalVerdict| match admitted {
            Some(remaining) => GlobalVerdict::Allowed { remaining },
            None => v,
        };
        let Some((a, mut conn)) = self.live() else {
            return verdict(GlobalVerdict::Unavailable);
        };
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        let redis_key = format!("{}rl:{}:{key}", a.settings.prefix, spec.name);
        let (interval, burst) = (spec.interval_micros(), spec.burst);
        let call = async move {
            scripts::gcra()
                .run::<(i64, i64, i64)>(&mut conn, &[&redis_key], &[&interval, &burst, &want])
                .await
        };
        match tokio::time::timeout(a.settings.command_timeout, call).await {
            Ok(Ok((granted, _, remaining))) if granted > 0 => {
                let granted = granted.clamp(1, u32::MAX as i64) as u32;
                if let Some(r) = refill.as_mut() {
                    // A request admitted locally keeps the whole batch; otherwise it takes one.
                    r.granted = if admitted.is_some() {
                        granted
                    } else {
                        granted - 1
                    };
                }
                verdict(GlobalVerdict::Allowed {
                    remaining: remaining.clamp(0, u32::MAX as i64) as u32,
                })
            }
            Ok(Ok((_, retry_us, _))) => verdict(GlobalVerdict::Limited {
                retry_after: Duration::from_micros(retry_us.max(1) as u64),
            }),
            Ok(Err(e)) => {
                self.failed(&a, "rate limit", &describe(&e));
                verdict(GlobalVerdict::Unavailable)
            }
            Err(_) => {
                self.failed(&a, "rate limit", "timed out");
                verdict(GlobalVerdict::Unavailable)
            }
        }
    }

    /// Counts a failed authentication from `ip` across replicas; a lockout it starts is
    /// announced to every replica.
    pub async fn auth_failure(&self, ip: IpAddr, spec: &BackoffSpec) -> SharedFailure {
        let Some((a, mut conn)) = self.live() else {
            return SharedFailure::Unavailable;
        };
        self.stats.round_trips.fetch_add(1, Ordering::Relaxed);
        let p = &a.settings.prefix;
        // One hash tag, the client's address, puts the three keys in one cluster slot.
        let keys = [
            format!("{p}fail:{{{ip}}}"),
            format!("{p}lock:{{{ip}}}"),
            format!("{p}lockn:{{{ip}}}"),
        ];
        let (max, window) = (spec.max_failures, spec.window.as_millis() as u64);
        let (base, longest) = (
            spec.base_lockout.as_millis() as u64,
            spec.max_lockout.as_millis() as u64,
        );
        let (channel, client) = (a.settings.channel(), ip.to_string());
        let mut index = conn.clone();
        let call = async move {
            scripts::lockout()
                .run::<(i64, i64)>(
                    &mut conn,
                    &[&keys[0], &keys[1], &keys[2]],
                    &[&max, &window, &base, &longest, &channel, &client],
                )
                .await
        };
        match tokio::time::timeout(a.settings.command_timeout, call).await {
            Ok(Ok((1, ms))) => {
                // Listed for replicas that connect later (a new replica, one back after a
                // failover): they load running lockouts instead of waiting for a failure.
                let until = unix_ms() + ms.max(1) as u64;
                let (key, member) = (lockouts_key(&a.settings), ip.to_string());
                self.handle.spawn(async move {
                    let _ = index.zadd::<_, _, _, ()>(key, member, until).await;
                });
                SharedFailure::Started(Duration::from_millis(ms.max(1) as u64))
            }
            Ok(Ok((2, ms))) => {
                SharedFailure::AlreadyLocked(Duration::from_millis(ms.max(1) as u64))
            }
            Ok(Ok(_)) => SharedFailure::Counted,
            Ok(Err(e)) => {
                self.failed(&a, "auth failure", &describe(&e));
                SharedFailure::Unavailable
            }
            Err(_) => {
                self.failed(&a, "auth failure", "timed out");
                SharedFailure::Unavailable
            }
        }
    }

    /// Drops spent reservations.
    pub fn maintain(&self) {
        for s in &self.reservations {
            let mut m = s.lock().unwrap_or_else(|p| p.into_inner());
            m.retain(|_, r| r.refilling || r.tokens > 0 && r.taken.elapsed() < RESERVATION_LIFE);
        }
        self.revocations.expire(crate::auth::now_unix());
    }

    /// Keeps one configuration connected: connects, loads the revocation list, listens for
    /// notifications, pings; on any failure it marks the store down and retries with jitter.
    async fn supervise(self: Arc<Self>, a: Arc<Active>) {
        let mut first = true;
        while !a.retired.load(Ordering::Acquire) {
            if !first {
                let jitter = rand::random::<u64>() % 250;
                tokio::time::sleep(Duration::from_millis(500 + jitter)).await;
                if a.retired.load(Ordering::Acquire) {
                    break;
                }
            }
            first = false;
            if let Err(e) = self.session(&a).await {
                a.conn.store(None);
                self.failed(&a, "connection", &e);
            }
        }
        a.conn.store(None);
    }

    async fn session(&self, a: &Arc<Active>) -> Result<(), String> {
        let connected = a
            .settings
            .connect_with_subscriber()
            .await
            .map_err(|e| e.to_string())?;
        let (conn, mut pubsub, address) = (connected.conn, connected.subscriber, connected.address);
        pubsub
            .subscribe(a.settings.channel())
            .await
            .map_err(|e| describe(&e))?;
        let mut c = conn.clone();
        self.resync(&a.settings, &mut c).await?;
        a.conn.store(Some(Arc::new(conn)));
        self.reached(a, &address);
        let mut messages = pubsub.on_message();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                m = messages.next() => {
                    let Some(m) = m else { return Err("pub/sub connection closed".into()) };
                    let Ok(text) = m.get_payload::<String>() else { continue };
                    self.stats.notifications.fetch_add(1, Ordering::Relaxed);
                    self.apply(&text);
                }
                _ = tick.tick() => {
                    if a.retired.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    ticks += 1;
                    let health = tokio::time::timeout(
                        a.settings.connect_timeout,
                        c.health(&a.settings.topology),
                    )
                    .await
                    .map_err(|_| "health check timed out".to_string())??;
                    if !health {
                        // A cluster that reports itself down: keep the connection, which
                        // follows the failover, and wait for it.
                        self.failed(a, "health check", "cluster_state is not ok");
                        continue;
                    }
                    if !a.up.load(Ordering::Relaxed) {
                        // Back after a request saw an error: catch up on what was missed.
                        self.resync(&a.settings, &mut c).await?;
                    }
                    self.mark_up(a);
                    // A periodic full resync covers notifications lost in transit.
                    if ticks.is_multiple_of(60) {
                        self.resync(&a.settings, &mut c).await?;
                    }
                }
            }
        }
    }

    /// A session is established: logs where, and counts it when it follows another.
    fn reached(&self, a: &Active, address: &str) {
        let mut last = a.address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = last.as_deref() {
            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            if before != address {
                tracing::warn!(target: "portcullis::shared", endpoint = %a.settings.endpoint(), from = before, to = address, "shared state moved to another server");
            }
        }
        *last = Some(address.to_string());
        drop(last);
        a.up.store(true, Ordering::Release);
        if a.logged.swap(1, Ordering::AcqRel) != 1 {
            tracing::info!(target: "portcullis::shared", endpoint = %a.settings.endpoint(), server = address, "shared state reachable");
        }
    }

    /// Reloads the revocation list from the store; closes sessions it newly revokes.
    async fn resync(&self, s: &SharedSettings, conn: &mut Conn) -> Result<(), String> {
        let entries = tokio::time::timeout(s.connect_timeout, load_revocations(s, conn))
            .await
            .map_err(|_| "loading the revocation list timed out".to_string())?
            .map_err(|e| e.to_string())?;
        self.revocations.replace(entries);
        self.close_revoked_sessions();
        let running = tokio::time::timeout(s.connect_timeout, load_lockouts(s, conn))
            .await
            .map_err(|_| "loading the lockouts timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (now, at) = (unix_ms(), Instant::now());
        for (ip, until) in running {
            if let (Ok(ip), true) = (ip.parse::<IpAddr>(), until > now) {
                self.backoff
                    .lock_for(ip, Duration::from_millis(until - now), at);
            }
        }
        Ok(())
    }

    /// A notification from another replica (or the CLI).
    fn apply(&self, text: &str) {
        let mut parts = text.splitn(4, ' ');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("lock"), Some(ip), Some(ms), _) => {
                if let (Ok(ip), Ok(ms)) = (ip.parse::<IpAddr>(), ms.parse::<u64>()) {
                    self.backoff
                        .lock_for(ip, Duration::from_millis(ms), Instant::now());
                }
            }
            (Some("revoke"), Some(kind), Some(expires), Some(value)) => {
                if let (Some(kind), Ok(expires)) = (Kind::parse(kind), expires.parse::<u64>()) {
                    self.revocations.insert(kind, value, expires);
                    tracing::info!(target: "portcullis::security", kind = kind.as_str(), "token revocation received");
                    self.close_revoked_sessions();
                }
            }
            (Some("unrevoke"), Some(kind), Some(value), _) => {
                if let Some(kind) = Kind::parse(kind) {
                    self.revocations.remove(kind, value);
                }
            }
            _ => tracing::debug!(target: "portcullis::shared", "unknown notification ignored"),
        }
    }

    fn close_revoked_sessions(&self) {
        (self.on_revoked)(&self.revocations);
    }
}

fn shard_of(key: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish() as usize % RESERVATION_SHARDS
}

/// The bucket name of a global limit for a request: the same on every replica (a hash of the
/// parts the limit is keyed by, so no address or subject is stored in clear in Redis).
pub fn limit_key(
    spec: &LimitSpec,
    ip: IpAddr,
    subject: Option<&str>,
    route: &str,
) -> Option<String> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    if spec.by_ip {
        match ip {
            IpAddr::V4(v) => ctx.update(&v.octets()),
            IpAddr::V6(v) => ctx.update(&v.octets()),
        }
    }
    ctx.update(b"\0");
    if spec.by_subject {
        ctx.update(subject?.as_bytes());
    }
    ctx.update(b"\0");
    if spec.by_route {
        ctx.update(route.as_bytes());
    }
    let d = ctx.finish();
    let mut out = String::with_capacity(32);
    for b in &d.as_ref()[..16] {
        out.push_str(&format!("{b:02x}"));
    }
    Some(out)
}

/// Where revocations live: `<prefix>revoked:<kind>:<value>` on one server; in a cluster
/// `{<prefix>revoked}:<kind>:<value>`, one hash tag that keeps the whole list in one slot, so
/// one node's `SCAN` finds it all and one `MGET` reads it.
fn revoked_prefix(s: &SharedSettings) -> String {
    if s.topology.is_cluster() {
        format!("{{{}revoked}}:", s.prefix)
    } else {
        format!("{}revoked:", s.prefix)
    }
}

fn revoked_key(s: &SharedSettings, kind: Kind, value: &str) -> String {
    format!("{}{}:{value}", revoked_prefix(s), kind.as_str())
}

/// The running lockouts: a sorted set of client addresses scored by when each lockout ends
/// (milliseconds since the epoch). One key, so one slot in a cluster.
fn lockouts_key(s: &SharedSettings) -> String {
    format!("{{{}lockouts}}", s.prefix)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lockouts that have not ended, as (address, end); ended ones are dropped from the set.
async fn load_lockouts(
    s: &SharedSettings,
    conn: &mut Conn,
) -> Result<Vec<(String, u64)>, StoreError> {
    let key = lockouts_key(s);
    let now = unix_ms();
    conn.zrembyscore::<_, _, _, ()>(&key, "-inf", now).await?;
    Ok(conn
        .zrangebyscore_withscores::<_, _, _, Vec<(String, u64)>>(&key, format!("({now}"), "+inf")
        .await?)
}

/// `text` matched literally by a `SCAN MATCH` glob.
fn glob_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

async fn load_revocations(s: &SharedSettings, conn: &mut Conn) -> Result<Entries, StoreError> {
    let head = revoked_prefix(s);
    let keys = conn
        .scan_near(&head, &format!("{}*", glob_literal(&head)))
        .await?;
    let mut out = Entries::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    for (k, v) in keys.iter().zip(values) {
        let Some((kind, value)) = k.get(head.len()..).and_then(|r| r.split_once(':')) else {
            continue;
        };
        if let (Some(kind), Some(exp)) = (Kind::parse(kind), v) {
            out.insert((kind, Box::from(value)), exp);
        }
    }
    Ok(out)
}

/// Adds a revocation to the store and tells every replica. `ttl` = `None` keeps it until
/// removed. Returns the expiry written (seconds since the epoch, 0 = never).
pub async fn revoke(
    s: &SharedSettings,
    kind: Kind,
    value: &str,
    ttl: Option<Duration>,
) -> Result<u64, StoreError> {
    let mut conn = s.connect().await?;
    let expires = ttl
        .map(|t| crate::auth::now_unix() + t.as_secs())
        .unwrap_or(0);
    let key = revoked_key(s, kind, value);
    let mut set = redis::cmd("SET");
    set.arg(&key).arg(expires);
    if let Some(t) = ttl {
        set.arg("EX").arg(t.as_secs().max(1));
    }
    set.query_async::<()>(&mut conn).await?;
    conn.publish::<_, _, ()>(
        s.channel(),
        format!("revoke {} {expires} {value}", kind.as_str()),
    )
    .await?;
    Ok(expires)
}

/// Removes a revocation. Returns whether it existed.
pub async fn unrevoke(s: &SharedSettings, kind: Kind, value: &str) -> Result<bool, StoreError> {
    let mut conn = s.connect().await?;
    let n: i64 = conn.del(revoked_key(s, kind, value)).await?;
    conn.publish::<_, _, ()>(s.channel(), format!("unrevoke {} {value}", kind.as_str()))
        .await?;
    Ok(n > 0)
}

/// Every revocation in the store, sorted.
pub async fn list_revocations(s: &SharedSettings) -> Result<Vec<(Kind, String, u64)>, StoreError> {
    let mut conn = s.connect().await?;
    let entries = load_revocations(s, &mut conn).await?;
    let mut v: Vec<_> = entries
        .into_iter()
        .map(|((k, v), e)| (k, v.into_string(), e))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_never_shows_credentials() {
        let s = SharedSettings::new("rediss://user:hunter2@redis.internal:6380/2?x=1".into());
        assert_eq!(s.endpoint(), "rediss://redis.internal:6380");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn limit_keys_are_stable_and_distinct() {
        let spec = LimitSpec::new(
            "l".into(),
            true,
            true,
            false,
            10,
            Duration::from_secs(1),
            10,
            None,
            10,
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = limit_key(&spec, ip, Some("alice"), "r").unwrap();
        assert_eq!(
            a,
            limit_key(&spec, ip, Some("alice"), "other-route").unwrap()
        );
        assert_ne!(a, limit_key(&spec, ip, Some("bob"), "r").unwrap());
        assert_eq!(limit_key(&spec, ip, None, "r"), None);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn small_limits_are_exact_and_large_ones_reserve_a_batch() {
        let spec = |requests, per, burst| {
            LimitSpec::new(
                "l".into(),
                false,
                false,
                false,
                requests,
                Duration::from_secs(per),
                burst,
                None,
                10,
            )
        };
        assert_eq!(spec(300, 60, 300).reserve_batch(), 1);
        assert_eq!(spec(10_000, 1, 10_000).reserve_batch(), 100);
        assert_eq!(spec(1_000_000_000, 1, 1_000_000_000).reserve_batch(), 1000);
        assert_eq!(spec(1_000_000, 3600, 1_000_000).reserve_batch(), 2);
    }
}
