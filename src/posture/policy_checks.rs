//! The checks that depend on the policy alone (run on every reload in production): auth,
//! HSTS, blocked and admin paths, rooms, CORS, WebSocket origins, JWT, trusted proxies, limits,
//! upstream TLS and shared state.

use std::net::IpAddr;

use super::item::{is_global, prod_fail, Item, Status};
use super::secrets::secrets_item;
use crate::config::Mode;
use crate::policy::raw::RawPolicyFile;
use crate::policy::specs::{SharedSettings, Topology};
use crate::policy::{Policy, SourceFile};

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
            ss.get_ref().urls().any(|url| {
                !crate::auth::secret::is_reference(url)
                    && url
                        .split_once("://")
                        .and_then(|(_, rest)| rest.split('/').next())
                        .is_some_and(|auth| auth.contains('@'))
            })
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
    // `rediss://…#insecure` asks for TLS, then takes any certificate: whoever is on the path can
    // pose as the store and lift revocations and lockouts or add their own, behind a URL that
    // looks encrypted.
    if s.topology.urls().iter().any(|u| u.contains("#insecure")) {
        return Item::new(
            "shared-state",
            prod_fail(mode),
            format!("{endpoint}: TLS without certificate checks (#insecure)"),
            "remove #insecure and set ca_file to the CA that signed the store's certificate",
        );
    }
    match exposure(s) {
        Some(Exposure::Clear) => {
            return Item::new(
                "shared-state",
                Status::Warn,
                format!("{endpoint}: plain redis:// (or TLS without certificate checks) to a server that may be off this host (lockouts and revocations travel in clear)"),
                "use rediss:// with ca_file, or keep Redis on a private network",
            )
        }
        Some(Exposure::NoPassword) => {
            return Item::new(
                "shared-state",
                Status::Warn,
                format!("{endpoint}: no password"),
                "set password = \"env:NAME\" (Redis ACL or requirepass)",
            )
        }
        None => {}
    }
    Item::pass(
        "shared-state",
        format!("{endpoint}; {global} global limit(s), {closed} fail closed"),
    )
}

/// How a store that may be off this host is open to the network it crosses.
enum Exposure {
    /// Plain `redis://`, or TLS without certificate checks (`#insecure`): everything read and
    /// written can be read (or changed) on the way.
    Clear,
    /// Verified TLS, but no password: whoever reaches the server reads and writes it.
    NoPassword,
}

/// Only one server named on this host is known to be local. With Sentinel the data goes to
/// whichever primary the sentinels name, and in a cluster to whichever nodes the seeds
/// announce: neither is known here, so both are judged as off this host.
fn exposure(s: &SharedSettings) -> Option<Exposure> {
    let local =
        matches!(s.topology, Topology::Single(_)) && s.hosts().iter().all(|h| host_is_loopback(h));
    if local {
        return None;
    }
    let urls = s.topology.urls();
    if !s.tls() || urls.iter().any(|u| u.contains("#insecure")) {
        return Some(Exposure::Clear);
    }
    // A password in a sentinel's URL is that sentinel's own, and a cluster client takes its
    // credentials from the first seed.
    let url_password = match &s.topology {
        Topology::Single(u) => has_password(u),
        Topology::Cluster(seeds) => seeds.first().is_some_and(|u| has_password(u)),
        Topology::Sentinel { .. } => false,
    };
    (s.password.is_none() && !url_password).then_some(Exposure::NoPassword)
}

/// Whether `url`'s user information carries a password (`redis://user:pw@…`, `redis://:pw@…`;
/// not a user name alone).
fn has_password(url: &str) -> bool {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, password)| !password.is_empty())
}

/// `[tls.acme] shared = true` keeps the ACME account key and every certificate's private key in
/// the policy's store. Where lockouts in clear are a warning, private keys in clear hand the
/// gateway's identity to anyone on the path: a FAIL in production. `None` when ACME state is not
/// shared (or there is no store, which `serve` refuses on its own). Checked at start and, like
/// `policy_items`, on every reload in production.
pub fn acme_shared_item(acme_shared: bool, p: &Policy, mode: Mode) -> Option<Item> {
    if !acme_shared {
        return None;
    }
    let s = p.shared_state.as_ref()?;
    let endpoint = s.endpoint();
    Some(match exposure(s) {
        Some(Exposure::Clear) => Item::new(
            "acme-shared",
            prod_fail(mode),
            format!("{endpoint}: plain redis:// (or TLS without certificate checks) to a server that may be off this host, and it holds the ACME account key and the certificates' private keys"),
            "use rediss:// with ca_file and a password, or one Redis server on this host",
        ),
        Some(Exposure::NoPassword) => Item::new(
            "acme-shared",
            prod_fail(mode),
            format!("{endpoint}: no password, and it holds the ACME account key and the certificates' private keys"),
            "set password = \"env:NAME\" (Redis ACL or requirepass)",
        ),
        None => Item::pass(
            "acme-shared",
            format!("ACME account and certificates kept in {endpoint}"),
        ),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_upstreams() {
        assert!(host_is_loopback("127.0.0.1:80"));
        assert!(host_is_loopback("[::1]:80"));
        assert!(host_is_loopback("localhost:8080"));
        assert!(!host_is_loopback("api.internal:80"));
    }

    #[test]
    fn shared_acme_keys_need_a_local_or_verified_and_private_store() {
        let judge = |store: &str| {
            let text = format!("[shared_state]\n{store}\n");
            let files = vec![SourceFile {
                path: "/p/p.toml".into(),
                text,
            }];
            let p = crate::compile::compile(&files, Mode::Development).unwrap();
            let i = acme_shared_item(true, &p, Mode::Production).unwrap();
            (i.status, i.finding)
        };
        for (store, want, why) in [
            ("url = \"redis://127.0.0.1:6379\"", Status::Pass, ""),
            ("url = \"redis://10.0.0.5:6379\"", Status::Fail, "plain redis://"),
            (
                "url = \"rediss://:pw@10.0.0.5:6380#insecure\"",
                Status::Fail,
                "plain redis://",
            ),
            ("url = \"rediss://alice@10.0.0.5:6380\"", Status::Fail, "no password"),
            ("url = \"rediss://alice:pw@10.0.0.5:6380\"", Status::Pass, ""),
            // The sentinels are local, the primary they name is not known to be.
            (
                "sentinels = [\"redis://127.0.0.1:26379\"]\nsentinel_master = \"pc\"",
                Status::Fail,
                "plain redis://",
            ),
            // A sentinel's password is the sentinel's own.
            (
                "sentinels = [\"rediss://:pw@10.0.0.1:26379\"]\nsentinel_master = \"pc\"",
                Status::Fail,
                "no password",
            ),
            (
                "sentinels = [\"rediss://10.0.0.1:26379\"]\nsentinel_master = \"pc\"\npassword = \"pw\"",
                Status::Pass,
                "",
            ),
            // A cluster client takes its credentials from the first seed.
            (
                "cluster_nodes = [\"rediss://10.0.0.1:6380\", \"rediss://:pw@10.0.0.2:6380\"]",
                Status::Fail,
                "no password",
            ),
            (
                "cluster_nodes = [\"rediss://:pw@10.0.0.1:6380\", \"rediss://10.0.0.2:6380\"]",
                Status::Pass,
                "",
            ),
        ] {
            let (st, f) = judge(store);
            assert_eq!(st, want, "{store}: {f}");
            assert!(f.contains(why), "{store}: {f}");
        }
        let p = crate::compile::compile(
            &[SourceFile {
                path: "/p/p.toml".into(),
                text: "[shared_state]\nurl = \"redis://10.0.0.5:6379\"\n".into(),
            }],
            Mode::Development,
        )
        .unwrap();
        assert!(acme_shared_item(false, &p, Mode::Production).is_none());
        let staging = acme_shared_item(true, &p, Mode::Staging).unwrap();
        assert_eq!(staging.status, Status::Warn);
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
        assert!(f.contains("plain redis://"), "{f}");
        let (st, f) = judge(
            "[shared_state]\nurl = \"rediss://10.0.0.5:6380\"\n",
            Mode::Production,
        );
        assert_eq!((st, f.contains("no password")), (Status::Warn, true));
        let insecure =
            "[shared_state]\nurl = \"rediss://10.0.0.5:6380/#insecure\"\npassword = \"pw\"\n";
        let (st, f) = judge(insecure, Mode::Production);
        assert_eq!(st, Status::Fail);
        assert!(f.contains("without certificate checks"), "{f}");
        assert_eq!(judge(insecure, Mode::Staging).0, Status::Warn);
        let (st, _) = judge(
            "[shared_state]\nurl = \"redis://127.0.0.1:6379\"\n\n[[limits]]\nname = \"g\"\nrequests = 5\nscope = \"global\"\n",
            Mode::Production,
        );
        assert_eq!(st, Status::Pass);
    }
}
