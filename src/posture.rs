//! The security posture checklist: one PASS / WARN / FAIL line per item with a one-line remedy.
//! `portcullis posture` prints it; `serve` in production mode runs the same checks and refuses
//! to start on any FAIL; a hot reload in production that would FAIL is refused (the policy-only
//! part, [`policy_items`]). Severity follows the mode: what production refuses is a warning in
//! development and staging, so the report says early what a promotion would meet.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, Mode};
use crate::policy::raw::RawPolicyFile;
use crate::policy::{Policy, SourceFile};
use crate::tls::store::CertSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One checklist item.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: &'static str,
    pub status: Status,
    pub finding: String,
    /// What to do about a WARN or FAIL.
    pub remedy: String,
}

impl Item {
    fn pass(id: &'static str, finding: impl Into<String>) -> Item {
        Item {
            id,
            status: Status::Pass,
            finding: finding.into(),
            remedy: String::new(),
        }
    }
    fn new(
        id: &'static str,
        status: Status,
        finding: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Item {
        Item {
            id,
            status,
            finding: finding.into(),
            remedy: remedy.into(),
        }
    }
    /// The line printed when production refuses on this item.
    pub fn line(&self) -> String {
        let mut s = format!("{} {}: {}", self.status.as_str(), self.id, self.finding);
        if !self.remedy.is_empty() && self.status != Status::Pass {
            let _ = write!(s, " — {}", self.remedy);
        }
        s
    }
}

/// FAIL in production, WARN elsewhere.
fn prod_fail(mode: Mode) -> Status {
    if mode == Mode::Production {
        Status::Fail
    } else {
        Status::Warn
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub items: Vec<Item>,
}

impl Report {
    pub fn failures(&self) -> Vec<&Item> {
        self.items
            .iter()
            .filter(|i| i.status == Status::Fail)
            .collect()
    }

    pub fn render(&self, mode: Mode) -> String {
        let mut out = format!("posture (mode {}):\n", mode.as_str());
        for i in &self.items {
            let _ = writeln!(out, "{}  {:<17} {}", i.status.as_str(), i.id, i.finding);
            if i.status != Status::Pass && !i.remedy.is_empty() {
                let _ = writeln!(out, "      {:<17} remedy: {}", "", i.remedy);
            }
        }
        let count = |s| self.items.iter().filter(|i| i.status == s).count();
        let _ = writeln!(
            out,
            "{} FAIL, {} WARN, {} PASS",
            count(Status::Fail),
            count(Status::Warn),
            count(Status::Pass)
        );
        out
    }
}

/// OCSP state of one certificate, as far as posture knows it.
#[derive(Debug, Clone)]
pub struct OcspView {
    pub name: String,
    /// Whether the certificate names an OCSP responder.
    pub has_responder: bool,
    pub stapled: bool,
    pub next_update: Option<i64>,
    pub last_error: Option<String>,
}

/// Everything the full checklist looks at.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub policy: Result<&'a Policy, String>,
    pub files: &'a [SourceFile],
    pub certs: Result<Option<&'a CertSet>, String>,
    pub ocsp: Vec<OcspView>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub now: u64,
}

/// The whole checklist, in a fixed order.
pub fn run(inp: &Inputs) -> Report {
    let config = inp.config;
    let mode = config.mode;
    let mut items = vec![mode_item(mode)];
    match &inp.policy {
        Ok(p) => {
            items.extend(policy_items(p, inp.files, mode, inp.now));
            items.push(dev_providers_item(config, p));
            items.push(worker_token_item(config, p, inp.env));
        }
        Err(e) => items.push(Item::new(
            "policy",
            Status::Fail,
            format!("the policy does not compile: {}", first_line(e)),
            "run `portcullis check` for every error",
        )),
    }
    items.push(listeners_item(config));
    items.push(admin_listener_item(config));
    items.push(tls_version_item(config));
    items.push(logging_item(config));
    items.push(keepalive_item(
        config,
        inp.policy.as_ref().ok().map(|p| p.network.header_timeout),
    ));
    items.extend(cert_items(config, &inp.certs, &inp.ocsp, inp.now));
    Report { items }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn mode_item(mode: Mode) -> Item {
    match mode {
        Mode::Production => Item::pass("mode", "production: insecure settings are refused"),
        Mode::Staging => Item::new(
            "mode",
            Status::Warn,
            "staging: production's refusals are only warnings",
            "set PORTCULLIS_MODE=production in front of real traffic",
        ),
        Mode::Development => Item::new(
            "mode",
            Status::Warn,
            "development: development-only auth and generated certificates are allowed",
            "set PORTCULLIS_MODE=production in front of real traffic",
        ),
    }
}

/// The checks that depend on the policy alone: run on every reload in production.
pub fn policy_items(p: &Policy, files: &[SourceFile], mode: Mode, now: u64) -> Vec<Item> {
    let raws: Vec<(&SourceFile, RawPolicyFile)> = files
        .iter()
        .filter_map(|f| {
            toml::from_str::<RawPolicyFile>(&f.text)
                .ok()
                .map(|r| (f, r))
        })
        .collect();
    vec![
        auth_item(p, mode),
        hsts_item(p, mode),
        terminal_item(p, mode, now),
        admin_paths_item(p),
        rooms_item(p),
        cors_item(p, &raws, mode),
        ws_origin_item(p),
        jwt_item(p, mode),
        trusted_proxies_item(p),
        secrets_item(files, mode),
        limits_item(p),
        upstream_tls_item(p),
        shared_state_item(p, &raws, mode),
    ]
}

fn shared_state_item(p: &Policy, raws: &[(&SourceFile, RawPolicyFile)], mode: Mode) -> Item {
    let Some(s) = &p.shared_state else {
        return Item::pass(
            "shared-state",
            "none: limits, lockouts and revocations are per replica (fine for one replica)",
        );
    };
    let global = p.limits.iter().filter(|l| l.global).count();
    let closed = p
        .limits
        .iter()
        .filter(|l| l.global && l.fail_closed)
        .count();
    let endpoint = s.endpoint();
    // A password written into a literal URL is a secret in clear text.
    let literal_credentials = raws.iter().any(|(_, r)| {
        r.shared_state.as_ref().is_some_and(|ss| {
            let url = ss.get_ref().url.get_ref();
            !crate::auth::secret::is_reference(url)
                && url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.split('/').next())
                    .is_some_and(|auth| auth.contains('@'))
        })
    });
    if literal_credentials {
        return Item::new(
            "shared-state",
            prod_fail(mode),
            format!("{endpoint}: credentials written in the URL in clear text"),
            "set url = \"env:NAME\" or password = \"file:/path\"",
        );
    }
    let host = endpoint.split_once("://").map(|x| x.1).unwrap_or("");
    let off_host = !host_is_loopback(host);
    if off_host && !endpoint.starts_with("rediss://") {
        return Item::new(
            "shared-state",
            Status::Warn,
            format!("{endpoint}: plain redis:// off this host (lockouts and revocations travel in clear)"),
            "use rediss:// with ca_file, or keep Redis on a private network",
        );
    }
    if off_host && s.password.is_none() && !s.url.contains('@') {
        return Item::new(
            "shared-state",
            Status::Warn,
            format!("{endpoint}: no password"),
            "set password = \"env:NAME\" (Redis ACL or requirepass)",
        );
    }
    Item::pass(
        "shared-state",
        format!("{endpoint}; {global} global limit(s), {closed} fail closed"),
    )
}

fn auth_item(p: &Policy, mode: Mode) -> Item {
    let insecure: Vec<&str> = p
        .routes
        .iter()
        .filter(|r| !r.public && r.auth.iter().any(|a| a.development_only()))
        .map(|r| &*r.name)
        .collect();
    let public = p.routes.iter().filter(|r| r.public).count();
    if insecure.is_empty() {
        return Item::pass(
            "auth",
            format!(
                "{} authenticated route(s), {public} public; no none/local provider",
                p.routes.len() - public
            ),
        );
    }
    Item::new(
        "auth",
        if mode == Mode::Development {
            Status::Warn
        } else {
            Status::Fail
        },
        format!(
            "route(s) {} admit anyone (auth provider none/local)",
            insecure.join(", ")
        ),
        "use static, jwt, room or mtls (AUTH_PROVIDER or auth.default_provider)",
    )
}

/// The development providers admit anyone: `serve` refuses them on a listener that is not
/// loopback in every mode, so this is a FAIL whatever the mode.
fn dev_providers_item(config: &Config, p: &Policy) -> Item {
    let dev: Vec<&str> = p
        .routes
        .iter()
        .filter(|r| !r.public && r.auth.iter().any(|a| a.development_only()))
        .map(|r| &*r.name)
        .collect();
    let addr = config.https_addr;
    if dev.is_empty() {
        return Item::pass("dev-providers", "no route uses none/local");
    }
    if addr.ip().is_loopback() {
        return Item::pass(
            "dev-providers",
            format!("none/local served on loopback {addr} only"),
        );
    }
    Item::new(
        "dev-providers",
        Status::Fail,
        format!(
            "route(s) {} admit anyone (none/local) on the HTTPS listener {addr}, which is not loopback: serve refuses to start",
            dev.join(", ")
        ),
        "bind the HTTPS listener to 127.0.0.1 (PORTCULLIS_HTTPS_ADDR) or use static, jwt, room or mtls (AUTH_PROVIDER=static)",
    )
}

fn hsts_item(p: &Policy, mode: Mode) -> Item {
    let Some(v) = &p.hsts else {
        return Item::new(
            "hsts",
            prod_fail(mode),
            "Strict-Transport-Security is off",
            "remove `[hsts] enabled = false`",
        );
    };
    let v = v.to_str().unwrap_or("");
    let max_age = v
        .split(';')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    if max_age < 15_552_000 {
        return Item::new(
            "hsts",
            Status::Warn,
            format!("{v} (under 180 days)"),
            "raise hsts.max_age to at least 15552000 (one year is usual)",
        );
    }
    Item::pass("hsts", v.to_string())
}

fn terminal_item(p: &Policy, mode: Mode, now: u64) -> Item {
    let blocked = &p.blocked;
    if !blocked.prefixes.iter().any(|b| &**b == "/terminal") {
        return Item::new(
            "terminal",
            Status::Fail,
            "/terminal is not among the blocked paths",
            "do not remove /terminal from [blocked]",
        );
    }
    let open: Vec<String> = blocked
        .exceptions
        .iter()
        .filter(|e| now < e.expires_at)
        .map(|e| format!("{} for route {} until {}", e.path, e.route, e.expires_text))
        .collect();
    let leaks: usize = crate::policy::paths::selftest(p, now)
        .iter()
        .map(|r| r.leaked.len())
        .sum();
    if leaks > 0 {
        return Item::new(
            "terminal",
            Status::Fail,
            format!("{leaks} bypass spelling(s) of blocked paths reach an upstream"),
            "run `portcullis selftest paths` and close what it lists",
        );
    }
    let terminal_open = blocked.exceptions.iter().any(|e| {
        now < e.expires_at && crate::policy::model::prefix_matches(&e.path, "/terminal", false)
    });
    if terminal_open {
        return Item::new(
            "terminal",
            prod_fail(mode),
            format!("opened by exception: {}", open.join("; ")),
            "remove the /terminal exception from [blocked]",
        );
    }
    if !open.is_empty() {
        return Item::new(
            "terminal",
            Status::Warn,
            format!(
                "/terminal closed; blocked paths opened by exception: {}",
                open.join("; ")
            ),
            "let exceptions expire or remove them once done",
        );
    }
    Item::pass(
        "terminal",
        format!(
            "/terminal and {} other blocked prefix(es) closed; bypass corpus refused",
            blocked.prefixes.len() - 1
        ),
    )
}

fn is_everything(n: &ipnet::IpNet) -> bool {
    n.prefix_len() == 0
}

fn admin_paths_item(p: &Policy) -> Item {
    let a = &p.admin;
    if a.prefixes.is_empty() {
        return Item::new(
            "admin-paths",
            Status::Warn,
            "no admin paths declared",
            "list the admin prefixes under [admin] paths",
        );
    }
    if a.networks.iter().any(is_everything) {
        return Item::new(
            "admin-paths",
            Status::Fail,
            "an admin network covers every address",
            "list only the operators' networks in admin.networks",
        );
    }
    let public_nets: Vec<String> = a
        .networks
        .iter()
        .filter(|n| is_global(n.network()))
        .map(|n| n.to_string())
        .collect();
    let prefixes = a
        .prefixes
        .iter()
        .map(|b| &**b)
        .collect::<Vec<_>>()
        .join(", ");
    if !public_nets.is_empty() {
        return Item::new(
            "admin-paths",
            Status::Warn,
            format!(
                "{prefixes} open without {} to public network(s) {}",
                a.capability,
                public_nets.join(", ")
            ),
            "prefer the capability over public networks in admin.networks",
        );
    }
    Item::pass(
        "admin-paths",
        format!(
            "{prefixes} need {}{}",
            a.capability,
            if a.networks.is_empty() {
                String::new()
            } else {
                " or an internal admin network".into()
            }
        ),
    )
}

/// Routes that reach the room server without the room provider while some room is locked:
/// locks hold on them too, but they cannot carry a room token, so they are side doors an
/// operator should know about. Empty when no room is locked.
pub fn rooms_side_doors(p: &Policy) -> Vec<&str> {
    use crate::policy::model::UpstreamTarget;
    let rooms = &p.rooms;
    if !(rooms.default_locked || rooms.access.iter().any(|a| a.locked)) {
        return Vec::new();
    }
    p.routes
        .iter()
        .filter(|r| p.upstreams[r.upstream].target == UpstreamTarget::Rooms)
        .filter(|r| r.public || !r.auth.contains(&crate::auth::Provider::Room))
        .map(|r| &*r.name)
        .collect()
}

/// Locked rooms are enforced on every route to the room server; a route without the room
/// provider cannot carry a room token, so its clients reach open rooms only. Shadow rules log
/// what they would refuse and let it in.
fn rooms_item(p: &Policy) -> Item {
    use crate::policy::model::UpstreamTarget;
    let to_rooms = p
        .routes
        .iter()
        .filter(|r| p.upstreams[r.upstream].target == UpstreamTarget::Rooms)
        .count();
    if to_rooms == 0 {
        return Item::pass("rooms", "no route reaches the room server");
    }
    let side_doors = rooms_side_doors(p);
    if !side_doors.is_empty() {
        return Item::new(
            "rooms",
            Status::Warn,
            format!(
                "route(s) {} reach the room server without the room provider (locked rooms refuse their clients)",
                side_doors.join(", ")
            ),
            "give every route to the room server auth = \"room\", or remove the extra route",
        );
    }
    let shadow: Vec<&str> = p
        .rooms
        .access
        .iter()
        .filter(|a| a.locked && a.shadow)
        .map(|a| &*a.room)
        .collect();
    if !shadow.is_empty() {
        return Item::new(
            "rooms",
            Status::Warn,
            format!(
                "locked room rule(s) {} in shadow mode: refusals are logged, not enforced",
                shadow.join(", ")
            ),
            "set shadow = false once the logs show only expected refusals",
        );
    }
    let locks = p.rooms.default_locked || p.rooms.access.iter().any(|a| a.locked);
    Item::pass(
        "rooms",
        if locks {
            format!("locks enforced on all {to_rooms} route(s) to the room server")
        } else {
            format!("no room is locked; {to_rooms} route(s) to the room server")
        },
    )
}

/// A browser sends cookies, and presents an installed client certificate, with a cross-site
/// WebSocket handshake: every such route that takes upgrades must check their Origin.
fn ws_origin_item(p: &Policy) -> Item {
    let ambient_ws: Vec<&crate::policy::model::Route> = p
        .routes
        .iter()
        .filter(|r| r.websocket && r.ambient_credentials())
        .collect();
    let unchecked: Vec<&str> = ambient_ws
        .iter()
        .filter(|r| r.csrf.is_none())
        .map(|r| &*r.name)
        .collect();
    if !unchecked.is_empty() {
        return Item::new(
            "ws-origin",
            Status::Fail,
            format!(
                "cookie or client-certificate route(s) {} take WebSocket upgrades without an origin check",
                unchecked.join(", ")
            ),
            "add [routes.csrf] with the allowed origins",
        );
    }
    if ambient_ws.is_empty() {
        return Item::pass(
            "ws-origin",
            "no cookie or client-certificate route takes WebSocket upgrades",
        );
    }
    Item::pass(
        "ws-origin",
        format!(
            "{} cookie or client-certificate route(s) with WebSocket, each checks Origin",
            ambient_ws.len()
        ),
    )
}

fn cors_item(p: &Policy, raws: &[(&SourceFile, RawPolicyFile)], mode: Mode) -> Item {
    let mut credentialed = Vec::new();
    for (_, raw) in raws {
        for r in &raw.routes {
            if let Some(c) = &r.cors {
                let c = c.get_ref();
                if c.credentials && c.origins.get_ref().iter().any(|o| o == "*") {
                    credentialed.push(r.name.get_ref().clone());
                }
            }
        }
    }
    if !credentialed.is_empty() {
        return Item::new(
            "cors",
            if mode == Mode::Development {
                Status::Warn
            } else {
                Status::Fail
            },
            format!(
                "route(s) {} allow origin \"*\" with credentials",
                credentialed.join(", ")
            ),
            "list the exact origins that may send credentials",
        );
    }
    let wildcard: Vec<&str> = p
        .routes
        .iter()
        .filter(|r| r.cors.as_ref().is_some_and(|c| c.any_origin))
        .map(|r| &*r.name)
        .collect();
    if !wildcard.is_empty() {
        return Item::new(
            "cors",
            Status::Warn,
            format!(
                "route(s) {} answer any origin (without credentials)",
                wildcard.join(", ")
            ),
            "list the origins unless the route is a public API",
        );
    }
    let with = p.routes.iter().filter(|r| r.cors.is_some()).count();
    Item::pass(
        "cors",
        format!("{with} route(s) with CORS, exact origins only"),
    )
}

fn jwt_item(p: &Policy, mode: Mode) -> Item {
    let mut problems = Vec::new();
    for i in &p.auth.issuers {
        if i.iss.is_none() {
            problems.push(format!("issuer {} has no `issuer` (iss unchecked)", i.name));
        }
        if i.audiences.is_empty() {
            problems.push(format!(
                "issuer {} has no `audiences` (aud unchecked)",
                i.name
            ));
        }
        if i.secret_len.is_some_and(|n| n < 32) {
            problems.push(format!(
                "issuer {} has an HMAC secret under 256 bits",
                i.name
            ));
        }
    }
    for k in p.auth.room_keys.keys.values() {
        if k.secret_len.is_some_and(|n| n < 32) {
            problems.push(format!(
                "room key {} has an HMAC secret under 256 bits",
                k.kid
            ));
        }
    }
    problems.sort();
    if problems.is_empty() {
        return Item::pass(
            "jwt",
            if p.auth.issuers.is_empty() {
                "no JWT issuers".to_string()
            } else {
                format!("{} issuer(s) check iss and aud", p.auth.issuers.len())
            },
        );
    }
    Item::new(
        "jwt",
        prod_fail(mode),
        problems.join("; "),
        "set `issuer` and `audiences`; HS secrets of 32+ random bytes",
    )
}

fn trusted_proxies_item(p: &Policy) -> Item {
    let t = &p.network.trusted_proxies;
    if t.iter().any(is_everything) {
        return Item::new(
            "trusted-proxies",
            Status::Fail,
            "a trusted proxy range covers every address (anyone can forge X-Forwarded-For)",
            "list the load balancers' CIDRs only",
        );
    }
    let wide: Vec<String> = t
        .iter()
        .filter(|n| match n {
            ipnet::IpNet::V4(v) => v.prefix_len() < 8,
            ipnet::IpNet::V6(v) => v.prefix_len() < 32,
        })
        .map(|n| n.to_string())
        .collect();
    if !wide.is_empty() {
        return Item::new(
            "trusted-proxies",
            Status::Warn,
            format!("very wide trusted range(s): {}", wide.join(", ")),
            "narrow network.trusted_proxies to the load balancers",
        );
    }
    if t.is_empty() {
        return Item::pass(
            "trusted-proxies",
            "none: X-Forwarded-For is ignored; clients are TCP peers",
        );
    }
    Item::pass(
        "trusted-proxies",
        t.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// Keys whose values are secrets (or carry one, like a webhook URL with its token).
const SECRET_KEYS: [&str; 3] = ["secret", "webhook", "password"];

/// Every secret-bearing value in the policy files: (file, dotted field, value).
pub fn secret_values(files: &[SourceFile]) -> Vec<(String, String, String)> {
    fn walk(v: &toml::Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let here = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    if let (true, toml::Value::String(s)) = (SECRET_KEYS.contains(&k.as_str()), v) {
                        out.push((here, s.clone()));
                    } else {
                        walk(v, &here, out);
                    }
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    for f in files {
        let Ok(v) = toml::from_str::<toml::Value>(&f.text) else {
            continue;
        };
        let mut found = Vec::new();
        walk(&v, "", &mut found);
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        all.extend(found.into_iter().map(|(k, s)| (name.clone(), k, s)));
    }
    all
}

/// The files named by `file:` secret references, resolved like the compiler resolves them.
pub fn secret_files(files: &[SourceFile]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for f in files {
        let base = f.path.parent().unwrap_or(std::path::Path::new("."));
        for (file, _, v) in secret_values(std::slice::from_ref(f)) {
            let _ = file;
            if let Some(p) = v.strip_prefix("file:") {
                out.push(base.join(p));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn secrets_item(files: &[SourceFile], mode: Mode) -> Item {
    let values = secret_values(files);
    let clear: Vec<String> = values
        .iter()
        .filter(|(_, _, v)| !crate::auth::secret::is_reference(v))
        .map(|(f, k, _)| format!("{f}: {k}"))
        .collect();
    if clear.is_empty() {
        return Item::pass(
            "secrets",
            format!(
                "{} secret(s) in policy, all by reference (env:/file:)",
                values.len()
            ),
        );
    }
    Item::new(
        "secrets",
        prod_fail(mode),
        format!("written in clear text: {}", clear.join(", ")),
        "use \"env:NAME\" or \"file:/path\" (a Secret mount) instead",
    )
}

fn limits_item(p: &Policy) -> Item {
    let lockout = p.auth.backoff.is_some();
    if p.limits.is_empty() && !lockout {
        return Item::new(
            "rate-limits",
            Status::Warn,
            "no rate limits and no lockout after failed authentication",
            "add [[limits]] per ip and per subject; keep [auth.backoff] on",
        );
    }
    Item::pass(
        "rate-limits",
        format!(
            "{} limit(s); lockout after repeated auth failures {}",
            p.limits.len(),
            if lockout { "on" } else { "off" }
        ),
    )
}

fn upstream_tls_item(p: &Policy) -> Item {
    use crate::policy::model::UpstreamTarget;
    let plain: Vec<String> = p
        .upstreams
        .iter()
        .filter_map(|u| match &u.target {
            UpstreamTarget::External { addresses, tls, .. }
                if !*tls && addresses.iter().any(|a| !host_is_loopback(a)) =>
            {
                Some(u.name.to_string())
            }
            _ => None,
        })
        .collect();
    if plain.is_empty() {
        return Item::pass("upstream-tls", "in-process, loopback or TLS upstreams only");
    }
    Item::new(
        "upstream-tls",
        Status::Warn,
        format!("plain HTTP off this host: {}", plain.join(", ")),
        "set tls = true with ca_file, or keep the hop on a private network",
    )
}

fn host_is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn worker_token_item(config: &Config, p: &Policy, env: &dyn Fn(&str) -> Option<String>) -> Item {
    let needed = p.auth.needs_worker_token || !config.admin_addr.ip().is_loopback();
    if !needed {
        return Item::pass(
            "worker-token",
            "not used (no static provider; admin listener on loopback)",
        );
    }
    let weak = |what: String, len: usize| {
        Item::new(
            "worker-token",
            prod_fail(config.mode),
            format!("{what} is {len} characters"),
            "use `portcullis token generate` (32 random bytes)",
        )
    };
    for name in ["PORTCULLIS_WORKER_TOKEN", "WORKER_AUTH_TOKEN"] {
        if let Some(t) = env(name) {
            let len = t.trim().len();
            if len < 32 {
                return weak(name.to_string(), len);
            }
            return Item::pass("worker-token", format!("from {name} ({len} characters)"));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let file = &config.token_file;
    match std::fs::metadata(file) {
        Err(_) => Item::pass(
            "worker-token",
            "generated at start: 32 random bytes saved with mode 0600",
        ),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Item::new(
            "worker-token",
            Status::Fail,
            format!(
                "token file is readable by group or others (mode {:o})",
                m.permissions().mode() & 0o777
            ),
            "chmod 600 the token file",
        ),
        Ok(_) => {
            let len = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| {
                    t.lines().find_map(|l| {
                        l.trim()
                            .strip_prefix("worker_auth_token:")
                            .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').len())
                    })
                })
                .unwrap_or(0);
            if len < 32 {
                return weak("the token in the token file".into(), len);
            }
            Item::pass(
                "worker-token",
                format!("token file, mode 0600 ({len} characters)"),
            )
        }
    }
}

fn listeners_item(config: &Config) -> Item {
    let http = match config.http_addr {
        Some(a) => format!("; HTTP {a} only redirects to HTTPS (308)"),
        None => "; no plain-HTTP listener".into(),
    };
    Item::pass(
        "tls-listeners",
        format!("HTTPS {} terminates TLS{http}", config.https_addr),
    )
}

/// Whether an address is routable on the public internet (not loopback, private, link-local,
/// unique-local, CGNAT or unspecified).
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v) => {
            let s = v.segments()[0];
            !(v.is_loopback()
                || v.is_unspecified()
                || (s & 0xfe00) == 0xfc00
                || (s & 0xffc0) == 0xfe80)
        }
    }
}

fn admin_listener_item(config: &Config) -> Item {
    let a: SocketAddr = config.admin_addr;
    if a.ip().is_loopback() {
        return Item::pass("admin-listener", format!("{a} (loopback)"));
    }
    if is_global(a.ip()) {
        return Item::new(
            "admin-listener",
            prod_fail(config.mode),
            format!("{a} is a public address (metrics, status page)"),
            "bind the admin listener to loopback or a private address",
        );
    }
    Item::new(
        "admin-listener",
        Status::Warn,
        format!("{a} is reachable off this host (plain HTTP; worker token required)"),
        "keep its port internal (NetworkPolicy) or bind 127.0.0.1",
    )
}

fn tls_version_item(config: &Config) -> Item {
    Item::pass(
        "tls-version",
        match config.tls_min_version {
            crate::config::TlsVersion::V13 => "TLS 1.3 only",
            crate::config::TlsVersion::V12 => "TLS 1.2 and 1.3 (AEAD, forward-secret suites)",
        },
    )
}

/// The bounds on a client connection's life: without an idle timeout a few addresses can hold
/// every connection slot with connections that sent one request and went quiet.
fn keepalive_item(config: &Config, header_timeout: Option<std::time::Duration>) -> Item {
    let b = &config.connections;
    let secs = |d: Option<std::time::Duration>| match d {
        Some(d) => format!("{} s", d.as_secs()),
        None => "off".to_string(),
    };
    let header = match header_timeout {
        Some(d) if d.subsec_millis() == 0 => format!("{} s", d.as_secs()),
        Some(d) => format!("{} ms", d.as_millis()),
        None => "per policy".to_string(),
    };
    let finding = format!(
        "idle {}, header {header}, body {}, send {}, {} request(s) per connection",
        secs(b.keepalive_timeout),
        secs(b.body_timeout),
        secs(b.send_timeout),
        b.max_requests
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unlimited".into()),
    );
    if b.keepalive_timeout.is_none() {
        return Item::new(
            "keepalive",
            prod_fail(config.mode),
            format!("keep-alive bounds off: {finding}"),
            "set network.keepalive_timeout_seconds in portcullis.toml (75 is the default)",
        );
    }
    if b.body_timeout.is_none() || b.send_timeout.is_none() || b.max_requests.is_none() {
        return Item::new(
            "keepalive",
            Status::Warn,
            format!("keep-alive bounds partly off: {finding}"),
            "set network.body_timeout_seconds, network.send_timeout_seconds and \
             network.max_requests_per_connection",
        );
    }
    Item::pass("keepalive", finding)
}

fn logging_item(config: &Config) -> Item {
    let level = &config.log_level;
    if level.contains("debug") || level.contains("trace") {
        return Item::new(
            "logging",
            prod_fail(config.mode),
            format!("log level {level:?} writes request details"),
            "use info (PORTCULLIS_LOG_LEVEL=info)",
        );
    }
    Item::pass(
        "logging",
        format!(
            "{level}, {}, secrets redacted",
            match config.log_format {
                crate::config::LogFormat::Json => "json",
                crate::config::LogFormat::Pretty => "text",
            }
        ),
    )
}

const DEV_CA: &str = "Portcullis Development CA";

fn issuer_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.issuer().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_string())
}

fn cert_items(
    config: &Config,
    certs: &Result<Option<&CertSet>, String>,
    ocsp: &[OcspView],
    now: u64,
) -> Vec<Item> {
    let mode = config.mode;
    let set = match certs {
        Err(e) => {
            return vec![Item::new(
                "certificates",
                Status::Fail,
                first_line(e).to_string(),
                "fix the pair `portcullis check` names",
            )]
        }
        Ok(None) if config.acme.is_some() => {
            let names = config.acme.as_ref().map(|a| a.names.join(", "));
            return vec![
                Item::pass(
                    "certificates",
                    format!(
                        "none in the folder: obtained over ACME for {}",
                        names.unwrap_or_default()
                    ),
                ),
                Item::pass("ocsp", "no folder certificates to staple"),
            ];
        }
        Ok(None) => {
            return vec![
                Item::new(
                    "certificates",
                    prod_fail(mode),
                    "none: a development certificate is generated at start",
                    "put NAME.crt + NAME.key pairs in the certificate folder",
                ),
                Item::pass("ocsp", "no certificates to staple"),
            ]
        }
        Ok(Some(set)) => set,
    };
    let now = now as i64;
    let warn = config.cert_expiry_warn_days as i64;
    let (mut expired, mut soon, mut dev) = (Vec::new(), Vec::new(), Vec::new());
    for e in &set.entries {
        let days = (e.not_after - now).div_euclid(86_400);
        if e.not_after <= now {
            expired.push(e.name.clone());
        } else if days < warn {
            soon.push(format!("{} ({days} days)", e.name));
        }
        if issuer_cn(e.key.cert[0].as_ref()).as_deref() == Some(DEV_CA) {
            dev.push(e.name.clone());
        }
    }
    let cert = if !expired.is_empty() {
        Item::new(
            "certificates",
            Status::Fail,
            format!("expired: {}", expired.join(", ")),
            "replace them; clients refuse expired certificates",
        )
    } else if !dev.is_empty() && mode != Mode::Development {
        Item::new(
            "certificates",
            prod_fail(mode),
            format!("issued by the development CA: {}", dev.join(", ")),
            "install certificates from a real CA",
        )
    } else if !soon.is_empty() {
        Item::new(
            "certificates",
            Status::Warn,
            format!("expiring within {warn} days: {}", soon.join(", ")),
            "renew them",
        )
    } else {
        Item::pass(
            "certificates",
            format!(
                "{} certificate(s), none expiring within {warn} days",
                set.entries.len()
            ),
        )
    };
    let with: Vec<&OcspView> = ocsp.iter().filter(|o| o.has_responder).collect();
    let revoked: Vec<&str> = with
        .iter()
        .filter(|o| {
            o.last_error
                .as_deref()
                .is_some_and(|e| e.contains("revoked"))
        })
        .map(|o| o.name.as_str())
        .collect();
    let unstapled: Vec<&str> = with
        .iter()
        .filter(|o| !o.stapled)
        .map(|o| o.name.as_str())
        .collect();
    let staple = if !revoked.is_empty() {
        Item::new(
            "ocsp",
            Status::Fail,
            format!("revoked by the CA: {}", revoked.join(", ")),
            "replace the certificate now",
        )
    } else if with.is_empty() {
        Item::pass("ocsp", "no certificate names an OCSP responder")
    } else if !unstapled.is_empty() {
        Item::new(
            "ocsp",
            Status::Warn,
            format!("no staple held for: {}", unstapled.join(", ")),
            "check the responder is reachable; staples are fetched in the background",
        )
    } else {
        Item::pass("ocsp", format!("{} certificate(s) stapled", with.len()))
    };
    vec![cert, staple]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_are_told_apart() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "0.0.0.0",
            "fd00::1",
            "::1",
            "100.64.0.1",
        ] {
            assert!(!is_global(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "2001:db8::1", "203.0.113.9"] {
            assert!(is_global(a.parse().unwrap()), "{a}");
        }
    }

    #[test]
    fn loopback_upstreams() {
        assert!(host_is_loopback("127.0.0.1:80"));
        assert!(host_is_loopback("[::1]:80"));
        assert!(host_is_loopback("localhost:8080"));
        assert!(!host_is_loopback("api.internal:80"));
    }

    #[test]
    fn shared_state_settings_are_judged() {
        let judge = |text: &str, mode: Mode| {
            let files = vec![SourceFile {
                path: "/p/p.toml".into(),
                text: text.into(),
            }];
            let p = crate::compile::compile(&files, Mode::Development).unwrap();
            let raws: Vec<_> = files
                .iter()
                .map(|f| (f, toml::from_str::<RawPolicyFile>(&f.text).unwrap()))
                .collect();
            let i = shared_state_item(&p, &raws, mode);
            (i.status, i.finding)
        };
        let (st, f) = judge(
            "[shared_state]\nurl = \"redis://:hunter2@10.0.0.5:6379\"\n",
            Mode::Production,
        );
        assert_eq!(st, Status::Fail);
        assert!(
            f.contains("credentials written in the URL") && !f.contains("hunter2"),
            "{f}"
        );
        let (st, f) = judge(
            "[shared_state]\nurl = \"redis://10.0.0.5:6379\"\n",
            Mode::Production,
        );
        assert_eq!(st, Status::Warn);
        assert!(f.contains("plain redis:// off this host"), "{f}");
        let (st, f) = judge(
            "[shared_state]\nurl = \"rediss://10.0.0.5:6380\"\n",
            Mode::Production,
        );
        assert_eq!((st, f.contains("no password")), (Status::Warn, true));
        let (st, _) = judge(
            "[shared_state]\nurl = \"redis://127.0.0.1:6379\"\n\n[[limits]]\nname = \"g\"\nrequests = 5\nscope = \"global\"\n",
            Mode::Production,
        );
        assert_eq!(st, Status::Pass);
    }
}
