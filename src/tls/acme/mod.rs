//! Automatic certificates over ACME (RFC 8555), configured by `[tls.acme]`.
//!
//! One task per name keeps a certificate: it serves the stored one if it is still valid, orders
//! a new one when none is stored or the renewal time has come (by default when a third of the
//! lifetime is left), answers the server's `http-01` challenge on the plain-HTTP listener or its
//! `tls-alpn-01` challenge on the HTTPS listener, and swaps the new certificate into the SNI
//! resolver. The old certificate serves until then. Failures back off exponentially with
//! jitter, and are logged, counted and raised as `certificate_failure` security events.
//!
//! Storage (`<data_dir>/acme` by default), every file written atomically and mode 0600:
//! - `account-<directory hash>.json`: the account key, one per directory URL;
//! - `certs/<name>.pem`: chain and key in one file, so a reader never sees a mismatched pair;
//! - `state/<name>.json`: expiry, next renewal and the last error, for `portcullis acme status`;
//! - `locks/<name>.lock`: held while ordering, so replicas sharing the folder never order the
//!   same name at once (a lock older than ten minutes is taken to be left by a crash).
//!
//! Certificates from the certificate folder take precedence for the names they cover.
//!
//! This file keeps the certificates (account, orders, renewal); `storage.rs` holds the folder
//! and `challenge.rs` answers the server's challenges.

mod challenge;
mod dns_update;
mod shared;
mod storage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::{AcmeChallenge, AcmeConfig};
use crate::observability::alerts::{self, EventKind};
use crate::tls::store::{load_pair, CertEntry, CertStore};

use challenge::Published;
pub use challenge::{offers_only_acme_alpn, AlpnChallenges, Challenges, PreTls, ACME_TLS_ALPN};
use shared::SharedAcme;
use storage::{ari_id, lock, now, state_path, try_lock, validity, write_private};
pub use storage::{cert_path, read_status, read_stored, NameStatus};

/// A renewal time picked in a suggested window; picked again only when the window changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AriChoice {
    certificate: String,
    window: (i64, i64),
    at: i64,
}

/// Held while ordering a name.
enum OrderLock {
    Folder(storage::NameLock),
    Shared(shared::RedisLock),
}

/// Counters for the metrics page.
#[derive(Debug, Default)]
pub struct AcmeStats {
    pub issued: AtomicU64,
    pub failed: AtomicU64,
    pub loaded_from_storage: AtomicU64,
}

/// The certificate manager.
pub struct Acme {
    cfg: AcmeConfig,
    store: Arc<CertStore>,
    pub challenges: Arc<Challenges>,
    pub stats: AcmeStats,
    status: Mutex<BTreeMap<String, NameStatus>>,
    account: tokio::sync::Mutex<Option<Account>>,
    /// Per name: the renewal window the server suggested (RFC 9773) and the time picked in it.
    ari: Mutex<BTreeMap<String, AriChoice>>,
    /// With `shared = true`: the `[shared_state]` store, attached once the gateway has it.
    shared: Arc<SharedAcme>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("names", &self.cfg.names)
            .finish_non_exhaustive()
    }
}

/// An HTTP client for the directory that trusts the system's roots and `ca_file`.
fn http_client(ca_file: Option<&Path>) -> Result<Box<dyn HttpClient>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(p) = ca_file {
        let certs = CertificateDer::pem_file_iter(p)
            .map_err(|e| format!("tls.acme.ca_file {}: {e}", p.display()))?;
        for c in certs {
            let c = c.map_err(|e| format!("tls.acme.ca_file {}: {e}", p.display()))?;
            roots
                .add(c)
                .map_err(|e| format!("tls.acme.ca_file {}: {e}", p.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted roots for the ACME directory (system roots empty, no tls.acme.ca_file)"
                .into(),
        );
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Ok(Box::new(AcmeHttp(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, BodyWrapper<Bytes>>(https),
    )))
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    BodyWrapper<Bytes>,
>;

/// Our client for instant-acme (its own pulls in a platform verifier and a second root store).
struct AcmeHttp(HttpsClient);

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>,
    > {
        let response = self.0.request(req);
        Box::pin(async move {
            response
                .await
                .map(BytesResponse::from)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}

impl Acme {
    pub fn new(cfg: AcmeConfig, store: Arc<CertStore>) -> Arc<Acme> {
        let shared = Arc::new(SharedAcme::default());
        let challenges = Arc::new(Challenges::new(&cfg.storage, shared.clone()));
        let status = cfg
            .names
            .iter()
            .map(|n| (n.clone(), read_status(&cfg.storage, n)))
            .collect();
        Arc::new(Acme {
            cfg,
            store,
            challenges,
            stats: AcmeStats::default(),
            status: Mutex::new(status),
            account: tokio::sync::Mutex::new(None),
            ari: Mutex::new(BTreeMap::new()),
            shared,
        })
    }

    /// Gives a manager with `shared = true` the gateway's shared store.
    pub fn attach_shared(&self, store: Arc<crate::shared::SharedStore>) {
        if self.cfg.shared {
            self.shared.attach(store);
        }
    }

    /// Serves the stored certificates that are still valid, before the listeners open.
    pub fn load_stored(&self) {
        for name in &self.cfg.names {
            if let Some((entry, nb, na)) = read_stored(&self.cfg.storage, name) {
                if na > now() {
                    self.install(entry, nb, na);
                    self.stats
                        .loaded_from_storage
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "portcullis::tls", name, not_after = na, "ACME: serving the stored certificate");
                }
            }
        }
    }

    pub fn status(&self) -> BTreeMap<String, NameStatus> {
        lock(&self.status).clone()
    }

    fn install(&self, entry: CertEntry, not_before: i64, not_after: i64) {
        let name = entry.name.clone();
        self.store.set_acme(Arc::new(entry));
        self.update(&name, |s| {
            s.not_before = Some(not_before);
            s.not_after = Some(not_after);
        });
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut NameStatus)) {
        let snapshot = {
            let mut all = lock(&self.status);
            let s = all.entry(name.to_string()).or_default();
            f(s);
            s.clone()
        };
        let json = serde_json::to_vec_pretty(&snapshot).unwrap_or_default();
        if let Err(e) = write_private(&state_path(&self.cfg.storage, name), &json) {
            tracing::warn!(target: "portcullis::tls", name, error = %e, "ACME: cannot save state");
        }
    }

    /// When a certificate valid over `[not_before, not_after]` is due for renewal.
    pub fn renewal_at(&self, not_before: i64, not_after: i64) -> i64 {
        let lifetime = not_after - not_before;
        let at = match self.cfg.renew_before {
            Some(d) => not_after - d.as_secs() as i64,
            None => not_after - lifetime / 3,
        };
        // A renewal window as long as the lifetime would order without pause: never sooner
        // than 1/360 of the lifetime (six hours of 90 days) after issuance.
        at.max(not_before + (lifetime / 360).max(10))
    }

    /// One keeper per configured name, to run for the gateway's life: each orders, installs
    /// and renews its name's certificate.
    pub fn keepers(
        self: &Arc<Self>,
    ) -> Vec<impl std::future::Future<Output = ()> + Send + 'static> {
        let names = self.cfg.names.clone();
        names
            .into_iter()
            .map(|name| self.clone().keep(name))
            .collect()
    }

    async fn keep(self: Arc<Self>, name: String) {
        let mut failures = 0u32;
        loop {
            if self.cfg.shared {
                self.pull_cert(&name).await;
            }
            let stored = read_stored(&self.cfg.storage, &name).filter(|(_, _, na)| *na > now());
            let mut due = match &stored {
                Some((_, nb, na)) => self.renewal_at(*nb, *na),
                None => now(),
            };
            // The server's renewal window, where it offers one, decides instead (RFC 9773);
            // and it is asked again when it says.
            let mut ask_again = None;
            if let (Some((entry, _, _)), 0) = (&stored, failures) {
                if let Some((at, retry)) = self.renewal_window(&name, entry).await {
                    due = at;
                    ask_again = Some(retry);
                }
            }
            let stored_fingerprint = stored.as_ref().map(|(e, _, _)| e.fingerprint());
            if let Some((entry, nb, na)) = stored {
                // A certificate another replica renewed, or ours from the last round.
                let served = self.store.acme_fingerprint(&name);
                if served != Some(entry.fingerprint()) {
                    self.install(entry, nb, na);
                }
            }
            let wait = due - now();
            if wait > 0 && failures == 0 {
                self.update(&name, |s| s.next_renewal = Some(due));
                // Wake at least hourly, to pick up a renewal by another replica in time.
                let jitter = rand::random::<u64>() % (wait as u64 / 100 + 1).min(60);
                let secs = (wait as u64 + jitter).min(3600);
                let sleep = match ask_again {
                    Some(retry) => Duration::from_secs(secs).min(retry),
                    None => Duration::from_secs(secs),
                };
                tokio::time::sleep(sleep).await;
                continue;
            }
            let lock = match self.order_lock(&name).await {
                Ok(Some(l)) => l,
                Ok(None) => {
                    // Another replica is ordering it; look again shortly.
                    tracing::info!(target: "portcullis::tls", name, "ACME: another process holds the order lock");
                    tokio::time::sleep(Duration::from_secs(5 + rand::random::<u64>() % 10)).await;
                    continue;
                }
                Err(e) => {
                    self.failed(
                        &name,
                        &mut failures,
                        format!("cannot take the order lock: {e}"),
                    )
                    .await;
                    continue;
                }
            };
            if self.cfg.shared {
                // What another replica stored before we took the lock.
                self.pull_cert(&name).await;
            }
            // Under the lock, a renewal by another replica shows as another stored certificate
            // that is no longer due (by the lifetime rule; the server's window is asked anew on
            // the next round).
            let deciding = stored_fingerprint;
            if let Some((entry, nb, na)) = read_stored(&self.cfg.storage, &name) {
                let other = deciding != Some(entry.fingerprint());
                let not_due = ask_again.is_none() && self.renewal_at(nb, na) > now();
                if na > now() && (other || not_due) {
                    self.unlock(lock).await;
                    failures = 0;
                    continue;
                }
            }
            let started = std::time::Instant::now();
            let mut result = self.obtain(&name).await;
            if let (true, Ok(_)) = (self.cfg.shared, &result) {
                // Others serve it from the store; until it is there, the order is not done.
                let pem = std::fs::read_to_string(cert_path(&self.cfg.storage, &name))
                    .map_err(|e| e.to_string());
                let pushed = match pem {
                    Ok(pem) => self.shared.put(&format!("cert:{name}"), &pem).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = pushed {
                    result = Err(format!("storing the certificate in the shared store: {e}"));
                }
            }
            self.unlock(lock).await;
            match result {
                Ok((entry, nb, na)) => {
                    failures = 0;
                    self.stats.issued.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "portcullis::tls", name, not_after = na, took_ms = started.elapsed().as_millis() as u64, challenge = self.cfg.challenge.as_str(), "ACME: certificate issued");
                    self.install(entry, nb, na);
                    self.update(&name, |s| {
                        s.last_issued = Some(now());
                        s.failures = 0;
                        s.last_error = None;
                        s.last_error_at = None;
                    });
                }
                Err(e) => self.failed(&name, &mut failures, e).await,
            }
        }
    }

    /// Records a failed attempt and waits out the backoff: `retry_min` doubling per failure up to
    /// `retry_max`, ±25% jitter, so replicas and restarts do not retry in step.
    async fn failed(&self, name: &str, failures: &mut u32, error: String) {
        *failures += 1;
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        let base = self
            .cfg
            .retry_min
            .saturating_mul(1u32 << (*failures - 1).min(16))
            .min(self.cfg.retry_max);
        let factor = 0.75 + rand::random::<f64>() * 0.5;
        let backoff = base.mul_f64(factor);
        let retry_at = now() + backoff.as_secs() as i64;
        let still_served = lock(&self.status)
            .get(name)
            .and_then(|s| s.not_after)
            .filter(|na| *na > now());
        tracing::error!(target: "portcullis::security", name, error = %error, failures = *failures, retry_in_s = backoff.as_secs(), still_serving_until = still_served, "ACME: certificate issuance failed");
        if let Some(hub) = alerts::hub() {
            hub.emit(EventKind::CertificateFailure, None);
        }
        let n = *failures;
        self.update(name, |s| {
            s.last_error = Some(error);
            s.last_error_at = Some(now());
            s.failures = n;
            s.next_renewal = Some(retry_at);
        });
        tokio::time::sleep(backoff).await;
    }

    /// The account file for the configured directory.
    fn account_path(&self) -> PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.cfg.directory.as_bytes());
        let tag: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.cfg.storage.join(format!("account-{tag}.json"))
    }

    /// Drops the cached account and moves its file aside (kept, not deleted).
    async fn forget_account(&self) {
        let mut held = self.account.lock().await;
        *held = None;
        let path = self.account_path();
        let _ = std::fs::rename(
            &path,
            path.with_extension(format!("json.unknown-{}", now())),
        );
    }

    async fn account(&self) -> Result<Account, String> {
        let mut held = self.account.lock().await;
        if let Some(a) = held.as_ref() {
            return Ok(a.clone());
        }
        let path = self.account_path();
        let client = http_client(self.cfg.ca_file.as_deref())?;
        let shared_key = format!(
            "account:{}",
            path.file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("account")
        );
        if self.cfg.shared {
            // The replicas' one account: take the stored one into the folder.
            if let Some(json) = self.shared.get(&shared_key).await? {
                write_private(&path, json.as_bytes())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        let account = match std::fs::read(&path) {
            Ok(bytes) => {
                let creds: AccountCredentials = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Account::builder_with_http(client)
                    .from_credentials(creds)
                    .await
                    .map_err(|e| format!("account: {e}"))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let contact: Vec<&str> = self.cfg.contact.iter().map(String::as_str).collect();
                let (account, creds) = Account::builder_with_http(client)
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.cfg.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| format!("creating the account at {}: {e}", self.cfg.directory))?;
                let mut json = serde_json::to_string(&creds).map_err(|e| e.to_string())?;
                if self.cfg.shared {
                    // Two replicas may register at once: the first stored is everyone's.
                    let first = self.shared.put_first(&shared_key, &json).await?;
                    if first != json {
                        write_private(&path, first.as_bytes())
                            .map_err(|e| format!("{}: {e}", path.display()))?;
                        drop(held);
                        return Box::pin(self.account()).await;
                    }
                    json = first;
                }
                write_private(&path, json.as_bytes())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                tracing::info!(target: "portcullis::tls", account = account.id(), "ACME: account created");
                account
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        *held = Some(account.clone());
        Ok(account)
    }

    /// When to renew `entry` by the server's renewal information, and when to ask again; `None`
    /// when the server offers none (or cannot be asked now), so the lifetime rule applies.
    async fn renewal_window(&self, name: &str, entry: &CertEntry) -> Option<(i64, Duration)> {
        let id = ari_id(entry)?;
        let account = self.account().await.ok()?;
        let (info, retry) = match account.renewal_info(&id).await {
            Ok(r) => r,
            Err(instant_acme::Error::Unsupported(_)) => return None,
            Err(e) => {
                tracing::debug!(target: "portcullis::tls", name, error = %e, "ACME: renewal information unavailable");
                return None;
            }
        };
        let w = &info.suggested_window;
        let window = (w.start.unix_timestamp(), w.end.unix_timestamp());
        if window.1 < window.0 {
            return None;
        }
        let certificate = id.to_string();
        let mut all = lock(&self.ari);
        let keep = all
            .get(name)
            .filter(|c| c.certificate == certificate && c.window == window)
            .map(|c| c.at);
        let at = keep.unwrap_or_else(|| {
            let span = (window.1 - window.0) as u64;
            let at = window.0 + (rand::random::<u64>() % (span + 1)) as i64;
            tracing::info!(target: "portcullis::tls", name, window_start = window.0, window_end = window.1, renew_at = at, "ACME: renewal scheduled by the server's renewal information");
            at
        });
        all.insert(
            name.to_string(),
            AriChoice {
                certificate,
                window,
                at,
            },
        );
        // Asked again when the server says, within a second and a day.
        Some((
            at,
            retry.clamp(Duration::from_secs(1), Duration::from_secs(86_400)),
        ))
    }

    /// The order lock: in the shared store, or a lock file in the folder.
    async fn order_lock(&self, name: &str) -> Result<Option<OrderLock>, String> {
        if self.cfg.shared {
            return Ok(self.shared.try_lock(name).await?.map(OrderLock::Shared));
        }
        try_lock(&self.cfg.storage, name)
            .map(|l| l.map(OrderLock::Folder))
            .map_err(|e| e.to_string())
    }

    async fn unlock(&self, lock: OrderLock) {
        match lock {
            OrderLock::Shared(l) => self.shared.unlock(l).await,
            OrderLock::Folder(l) => drop(l),
        }
    }

    /// Copies the certificate another replica stored in the shared store into the folder.
    async fn pull_cert(&self, name: &str) {
        let pem = match self.shared.get(&format!("cert:{name}")).await {
            Ok(Some(pem)) => pem,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(target: "portcullis::tls", name, error = %e, "ACME: cannot read the shared store");
                return;
            }
        };
        let path = cert_path(&self.cfg.storage, name);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(pem.as_str()) {
            return;
        }
        let fits = load_pair(name, &path, &path).is_ok();
        if let Err(e) = write_private(&path, pem.as_bytes()) {
            tracing::warn!(target: "portcullis::tls", name, error = %e, "ACME: cannot copy the shared certificate");
        } else if load_pair(name, &path, &path).is_err() {
            tracing::warn!(target: "portcullis::tls", name, had_one = fits, "ACME: the shared store holds an unusable certificate");
        } else {
            tracing::info!(target: "portcullis::tls", name, "ACME: certificate taken from the shared store");
        }
    }

    fn dns_ttl(&self) -> u32 {
        self.cfg.dns.as_ref().map(|d| d.ttl).unwrap_or(60)
    }

    /// One signed update at the zone's server (`dns-01`).
    async fn dns_change(&self, change: dns_update::Change) -> Result<(), String> {
        let dns = self
            .cfg
            .dns
            .as_ref()
            .ok_or("dns-01 without a [tls.acme.dns] section")?;
        let algorithm = dns_update::TsigAlgorithm::parse(&dns.tsig_algorithm)
            .ok_or("unknown TSIG algorithm")?;
        let key = dns_update::TsigKey::new(&dns.tsig_key, algorithm, &dns.tsig_secret)
            .map_err(|e| e.to_string())?;
        dns_update::update(
            &dns.server,
            &dns.zone,
            &key,
            std::slice::from_ref(&change),
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| format!("dns-01 record: {e}"))
    }

    /// Places an order for `name`, answers its challenge, and stores the certificate.
    async fn obtain(&self, name: &str) -> Result<(CertEntry, i64, i64), String> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(name.to_string())];
        // A renewal the server scheduled names the certificate it replaces (RFC 9773 5).
        let replaces = lock(&self.ari).get(name).and_then(|c| {
            let (entry, _, _) = read_stored(&self.cfg.storage, name)?;
            let id = ari_id(&entry)?;
            (id.to_string() == c.certificate).then_some(id)
        });
        let ordered = match replaces {
            Some(id) => match account.new_order(&NewOrder::new(&ids).replaces(id)).await {
                // A server that publishes renewal information but ignores `replaces` in an
                // order (instant-acme checks the echo): order again without it.
                Err(instant_acme::Error::Other(e)) if e.to_string().contains("replaces") => {
                    tracing::info!(target: "portcullis::tls", name, "ACME: the server does not mark orders as replacing a certificate; ordering without");
                    account.new_order(&NewOrder::new(&ids)).await
                }
                other => other,
            },
            None => account.new_order(&NewOrder::new(&ids)).await,
        };
        let mut order = match ordered {
            Ok(o) => o,
            // The server no longer knows the account (a test server restarted, an account
            // deactivated elsewhere): register a new one, once.
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref()
                    == Some("urn:ietf:params:acme:error:accountDoesNotExist") =>
            {
                tracing::warn!(target: "portcullis::tls", name, "ACME: the server no longer knows our account; registering a new one");
                self.forget_account().await;
                self.account()
                    .await?
                    .new_order(&NewOrder::new(&ids))
                    .await
                    .map_err(|e| format!("new order: {e}"))?
            }
            Err(e) => return Err(format!("new order: {e}")),
        };
        let mut published = Published {
            challenges: &self.challenges,
            files: Vec::new(),
            tokens: Vec::new(),
            names: Vec::new(),
        };
        let kind = match self.cfg.challenge {
            AcmeChallenge::Http01 => ChallengeType::Http01,
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            AcmeChallenge::Dns01 => ChallengeType::Dns01,
        };
        // dns-01 records published for this order, removed however it ends.
        let mut records: Vec<(String, String)> = Vec::new();
        let mut shared_tokens: Vec<String> = Vec::new();
        let validated = async {
            let mut authorizations = order.authorizations();
            while let Some(a) = authorizations.next().await {
                let mut authz = a.map_err(|e| format!("authorization: {e}"))?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    s => return Err(format!("authorization for {name} is {s:?}")),
                }
                let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                    format!(
                        "the ACME server offers no {} challenge for {name}",
                        self.cfg.challenge.as_str()
                    )
                })?;
                let key_auth = challenge.key_authorization();
                match self.cfg.challenge {
                    AcmeChallenge::Http01 => {
                        published.http01(challenge.token.clone(), key_auth.as_str().to_string())?;
                        if self.cfg.shared {
                            self.shared
                                .put_expiring(
                                    &format!("http-01:{}", challenge.token),
                                    key_auth.as_str(),
                                )
                                .await?;
                            shared_tokens.push(challenge.token.clone());
                        }
                    }
                    AcmeChallenge::TlsAlpn01 => {
                        published.alpn(name.to_string(), key_auth.digest().as_ref())?
                    }
                    AcmeChallenge::Dns01 => {
                        let Identifier::Dns(domain) = challenge.identifier().identifier else {
                            return Err(format!("dns-01 for a non-DNS identifier of {name}"));
                        };
                        let record = format!("_acme-challenge.{domain}");
                        let value = key_auth.dns_value();
                        self.dns_change(dns_update::Change::AddTxt(
                            record.clone(),
                            value.clone(),
                            self.dns_ttl(),
                        ))
                        .await?;
                        records.push((record, value));
                    }
                }
                if let Some(wait) = self.cfg.dns.as_ref().map(|d| d.propagation) {
                    tokio::time::sleep(wait).await;
                }
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| format!("challenge: {e}"))?;
            }
            let retry = RetryPolicy::new()
                .initial_delay(Duration::from_millis(250))
                .backoff(1.5)
                .timeout(Duration::from_secs(90));
            order
                .poll_ready(&retry)
                .await
                .map_err(|e| format!("validation: {e}"))
        }
        .await;
        for (record, value) in records {
            if let Err(e) = self
                .dns_change(dns_update::Change::DeleteTxt(record.clone(), value))
                .await
            {
                tracing::warn!(target: "portcullis::tls", name, record, error = %e, "ACME: cannot remove a dns-01 record");
            }
        }
        for token in shared_tokens {
            let _ = self.shared.delete(&format!("http-01:{token}")).await;
        }
        let status = validated?;
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(Duration::from_secs(90));
        if status != OrderStatus::Ready {
            let why = order
                .state()
                .error
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default();
            return Err(format!("order for {name} is {status:?} {why}")
                .trim()
                .to_string());
        }
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain = order
            .poll_certificate(&retry)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        drop(published);
        let mut pem = chain;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&key.serialize_pem());
        let path = cert_path(&self.cfg.storage, name);
        write_private(&path, pem.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
        let entry = load_pair(name, &path, &path).map_err(|e| e.to_string())?;
        let (nb, na) = validity(&entry).ok_or("the issued certificate does not parse")?;
        Ok((entry, nb, na))
    }
}
