//! Security events and alerting. Components `emit` events (authentication failures, lockouts,
//! blocked-path hits, CSRF refusals, WebSocket budget closes, revoked staples, refused reloads,
//! failed certificate issuance or renewal, forwarding headers from a trusted proxy that do not
//! name the client),
//! which they also log (the refusals on the access log, the others on `portcullis::security`);
//! the hub counts each and offers it to the alert engine
//! through a bounded queue — `emit` never waits, and a full queue drops (and counts) the event.
//! The engine applies the policy's `[[alerts]]` rules: more than `threshold` events of a kind
//! within `window_seconds`, overall or from one client IP, raises one alert per rule, scope and
//! window, POSTed as JSON (or a Slack-compatible `{"text": …}`) to the rule's webhook, with
//! jittered retries; deliveries go through their own bounded queue, so a hanging webhook delays
//! only other alerts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use crate::policy::specs::{AlertRule, EventKind};
use crate::policy::PolicyStore;

#[derive(Debug)]
struct Event {
    kind: EventKind,
    client: Option<IpAddr>,
    at: Instant,
}

/// The event hub, shared by every component.
pub struct SecurityEvents {
    tx: mpsc::Sender<Event>,
    counts: [AtomicU64; 9],
    pub dropped: AtomicU64,
    pub alerts_sent: AtomicU64,
    pub alerts_failed: AtomicU64,
    trend: std::sync::Mutex<Trend>,
}

/// Authentication failures over the last hour: per minute, and per client IP.
#[derive(Debug, Default)]
struct Trend {
    /// (unix minute, failures), oldest first, at most 60.
    minutes: std::collections::VecDeque<(u64, u64)>,
    /// Client IP → (failures, last unix minute seen).
    by_ip: HashMap<IpAddr, (u64, u64)>,
}

const TREND_IPS: usize = 10_000;

impl SecurityEvents {
    /// The hub and the receiving end for `run`.
    pub fn new() -> (Arc<SecurityEvents>, EventReceiver) {
        let (tx, rx) = mpsc::channel(4096);
        (
            Arc::new(SecurityEvents {
                tx,
                counts: Default::default(),
                dropped: AtomicU64::new(0),
                alerts_sent: AtomicU64::new(0),
                alerts_failed: AtomicU64::new(0),
                trend: std::sync::Mutex::new(Trend::default()),
            }),
            EventReceiver(rx),
        )
    }

    /// Records an event. Never blocks.
    pub fn emit(&self, kind: EventKind, client: Option<IpAddr>) {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
        if kind == EventKind::AuthFailure {
            self.record_trend(client);
        }
        let e = Event {
            kind,
            client,
            at: Instant::now(),
        };
        if self.tx.try_send(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_trend(&self, client: Option<IpAddr>) {
        let minute = crate::auth::now_unix() / 60;
        let mut t = self.trend.lock().unwrap_or_else(|p| p.into_inner());
        match t.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n += 1,
            _ => t.minutes.push_back((minute, 1)),
        }
        while t.minutes.front().is_some_and(|(m, _)| *m + 60 <= minute) {
            t.minutes.pop_front();
        }
        if let Some(ip) = client {
            if t.by_ip.len() >= TREND_IPS && !t.by_ip.contains_key(&ip) {
                t.by_ip.retain(|_, (_, last)| *last + 60 > minute);
                if t.by_ip.len() >= TREND_IPS {
                    return;
                }
            }
            let e = t.by_ip.entry(ip).or_insert((0, minute));
            if e.1 + 60 <= minute {
                *e = (0, minute);
            }
            e.0 += 1;
            e.1 = minute;
        }
    }

    /// Authentication failures per minute for the last 60 minutes, oldest first.
    pub fn auth_trend(&self) -> Vec<u64> {
        let minute = crate::auth::now_unix() / 60;
        let t = self.trend.lock().unwrap_or_else(|p| p.into_inner());
        (0..60)
            .map(|i| {
                let m = minute + 1 + i - 60;
                t.minutes
                    .iter()
                    .find(|(k, _)| *k == m)
                    .map(|(_, n)| *n)
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The client IPs with the most authentication failures in the last hour.
    pub fn top_ips(&self, n: usize) -> Vec<(IpAddr, u64)> {
        let minute = crate::auth::now_unix() / 60;
        let t = self.trend.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(IpAddr, u64)> = t
            .by_ip
            .iter()
            .filter(|(_, (_, last))| *last + 60 > minute)
            .map(|(ip, (c, _))| (*ip, *c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        EventKind::ALL
            .iter()
            .map(|k| (k.as_str(), self.counts[*k as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

pub struct EventReceiver(mpsc::Receiver<Event>);

static HUB: std::sync::OnceLock<Arc<SecurityEvents>> = std::sync::OnceLock::new();

/// Makes `hub` the process's event hub (once; later calls are ignored).
pub fn install(hub: Arc<SecurityEvents>) {
    let _ = HUB.set(hub);
}

/// The process's hub, once installed.
pub fn hub() -> Option<&'static Arc<SecurityEvents>> {
    HUB.get()
}

/// Emits an event on the process's hub (nothing before `install`, e.g. in `check`).
pub fn emit(kind: EventKind, client: Option<IpAddr>) {
    if let Some(h) = HUB.get() {
        h.emit(kind, client);
    }
}

#[derive(Debug)]
struct Window {
    started: Instant,
    count: u64,
    alerted: bool,
}

/// One alert to deliver.
#[derive(Debug, Clone)]
struct Alert {
    rule: AlertRule,
    count: u64,
    client: Option<IpAddr>,
    id: String,
}

/// Runs the engine and the delivery worker until the process ends.
pub async fn run(events: Arc<SecurityEvents>, mut rx: EventReceiver, policy: Arc<PolicyStore>) {
    let (deliver_tx, deliver_rx) = mpsc::channel::<Alert>(256);
    tokio::spawn(deliver(events.clone(), deliver_rx));
    let mut windows: HashMap<(Arc<str>, Option<IpAddr>), Window> = HashMap::new();
    let mut last_sweep = Instant::now();
    while let Some(e) = rx.0.recv().await {
        let p = policy.snapshot();
        for rule in p.alerts.iter().filter(|r| r.event == e.kind) {
            let key = (rule.name.clone(), if rule.per_ip { e.client } else { None });
            if rule.per_ip && e.client.is_none() {
                continue;
            }
            let w = windows.entry(key).or_insert(Window {
                started: e.at,
                count: 0,
                alerted: false,
            });
            if e.at.duration_since(w.started) >= rule.window {
                *w = Window {
                    started: e.at,
                    count: 0,
                    alerted: false,
                };
            }
            w.count += 1;
            if w.count > rule.threshold && !w.alerted {
                w.alerted = true;
                let alert = Alert {
                    rule: rule.clone(),
                    count: w.count,
                    client: if rule.per_ip { e.client } else { None },
                    id: format!("{:016x}", rand::random::<u64>()),
                };
                tracing::warn!(
                    target: "portcullis::security",
                    alert = &*rule.name,
                    event = rule.event.as_str(),
                    count = w.count,
                    client = %alert.client.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    "alert raised"
                );
                if deliver_tx.try_send(alert).is_err() {
                    events.alerts_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "portcullis::security", alert = &*rule.name, "alert dropped: the delivery queue is full");
                }
            }
        }
        // Forget windows long past (bounded memory under a flood of distinct IPs).
        if last_sweep.elapsed() > Duration::from_secs(10) || windows.len() > 100_000 {
            let now = Instant::now();
            windows.retain(|_, w| now.duration_since(w.started) < Duration::from_secs(3600));
            if windows.len() > 100_000 {
                windows.clear();
            }
            last_sweep = now;
        }
    }
}

fn payload(a: &Alert) -> serde_json::Value {
    let r = &a.rule;
    let scope = match a.client {
        Some(ip) => format!("from {ip}"),
        None => "overall".to_string(),
    };
    let text = format!(
        "Portcullis alert {}: {} {} events {} within {} s (threshold {})",
        r.name,
        a.count,
        r.event.as_str(),
        scope,
        r.window.as_secs(),
        r.threshold
    );
    if r.slack {
        serde_json::json!({ "text": text })
    } else {
        serde_json::json!({
            "id": a.id,
            "alert": &*r.name,
            "event": r.event.as_str(),
            "count": a.count,
            "threshold": r.threshold,
            "window_seconds": r.window.as_secs(),
            "scope": if a.client.is_some() { "ip" } else { "global" },
            "client": a.client.map(|c| c.to_string()),
            "at": crate::auth::now_unix(),
            "text": text,
        })
    }
}

async fn deliver(events: Arc<SecurityEvents>, mut rx: mpsc::Receiver<Alert>) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "alert delivery disabled: no HTTP client");
            return;
        }
    };
    while let Some(a) = rx.recv().await {
        let body = payload(&a);
        let mut delivered = false;
        for attempt in 0..4u32 {
            if attempt > 0 {
                let base = 500u64 << attempt;
                let jitter = rand::random::<u64>() % (base / 2 + 1);
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
            }
            match http.post(&a.rule.webhook).json(&body).send().await {
                Ok(r) if r.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(r) => {
                    tracing::warn!(target: "portcullis::security", alert = &*a.rule.name, status = r.status().as_u16(), attempt, "alert webhook refused; retrying")
                }
                Err(e) => {
                    tracing::warn!(target: "portcullis::security", alert = &*a.rule.name, error = %e.without_url(), attempt, "alert webhook unreachable; retrying")
                }
            }
        }
        if delivered {
            events.alerts_sent.fetch_add(1, Ordering::Relaxed);
        } else {
            events.alerts_failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(target: "portcullis::security", alert = &*a.rule.name, "alert not delivered after 4 attempts");
        }
    }
}
