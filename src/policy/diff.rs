//! `portcullis policy diff OLD NEW`: the effective difference between two compiled policies, per
//! route and per section, each line tagged with what it does to access — `opens` (someone gains
//! access or a path is reachable), `closes` (someone loses it) or `changes` (neither, or both).
//! Compiled, not textual: a moved file, a reordered route or a default written out changes
//! nothing and prints nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::model::{Policy, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Opens,
    Closes,
    Changes,
}

impl Effect {
    fn tag(self) -> &'static str {
        match self {
            Effect::Opens => "opens",
            Effect::Closes => "closes",
            Effect::Changes => "changes",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Change {
    pub subject: String,
    pub text: String,
    pub effect: Effect,
}

fn set<T: Ord + Clone>(v: impl IntoIterator<Item = T>) -> BTreeSet<T> {
    v.into_iter().collect()
}

fn list(v: &BTreeSet<String>) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn hosts(r: &Route) -> BTreeSet<String> {
    r.host_names().into_iter().collect()
}

fn access(r: &Route) -> String {
    r.access_summary()
}

fn describe(p: &Policy, r: &Route) -> String {
    let caps = set(r.capabilities.iter().map(|c| c.to_string()));
    format!(
        "{}{} → {}; {}; capabilities {}; methods {}",
        list(&hosts(r)).replace("(none)", "*"),
        r.prefix,
        p.upstreams[r.upstream].name,
        access(r),
        list(&caps),
        r.methods.names().join(",")
    )
}

/// Compares two compiled policies.
pub fn diff(old: &Policy, new: &Policy) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |subject: String, text: String, effect: Effect| {
        out.push(Change {
            subject,
            text,
            effect,
        })
    };
    let olds: BTreeMap<&str, &Route> = old.routes.iter().map(|r| (&*r.name, r)).collect();
    let news: BTreeMap<&str, &Route> = new.routes.iter().map(|r| (&*r.name, r)).collect();
    for (name, r) in &olds {
        if !news.contains_key(name) {
            push(
                format!("route {name}"),
                format!("removed (was {})", describe(old, r)),
                Effect::Closes,
            );
        }
    }
    for (name, n) in &news {
        let subject = format!("route {name}");
        let Some(o) = olds.get(name) else {
            push(
                subject,
                format!("added: {}", describe(new, n)),
                Effect::Opens,
            );
            continue;
        };
        route_changes(old, o, new, n, &mut |t, e| push(subject.clone(), t, e));
    }
    // Rate limits, by name.
    let ol: BTreeMap<&str, _> = old.limits.iter().map(|l| (&*l.name, l)).collect();
    let nl: BTreeMap<&str, _> = new.limits.iter().map(|l| (&*l.name, l)).collect();
    let show = |l: &crate::limits::LimitSpec| {
        let mut keys = Vec::new();
        for (on, k) in [
            (l.by_ip, "ip"),
            (l.by_subject, "subject"),
            (l.by_route, "route"),
        ] {
            if on {
                keys.push(k);
            }
        }
        format!(
            "{} per {}s (burst {}) per [{}] on {}{}{}",
            l.requests,
            l.per.as_secs(),
            l.burst,
            keys.join(","),
            l.routes
                .as_ref()
                .map(|r| r.iter().map(|s| &**s).collect::<Vec<_>>().join(","))
                .unwrap_or_else(|| "every route".into()),
            match (l.global, l.fail_closed) {
                (false, _) => "",
                (true, false) => " (global, fail open)",
                (true, true) => " (global, fail closed)",
            },
            if l.shadow { " (shadow)" } else { "" }
        )
    };
    for (name, l) in &ol {
        if !nl.contains_key(name) {
            push(
                format!("limit {name}"),
                format!("removed (was {})", show(l)),
                Effect::Opens,
            );
        }
    }
    for (name, l) in &nl {
        match ol.get(name) {
            None => push(
                format!("limit {name}"),
                format!("added: {}", show(l)),
                if l.shadow {
                    Effect::Changes
                } else {
                    Effect::Closes
                },
            ),
            Some(o) if show(o) != show(l) => {
                let (or, nr) = (
                    o.requests as f64 / o.per.as_secs_f64(),
                    l.requests as f64 / l.per.as_secs_f64(),
                );
                let effect = if nr == or && l.burst == o.burst && o.global != l.global {
                    // One count for every replica instead of one each, or the reverse.
                    if l.global {
                        Effect::Closes
                    } else {
                        Effect::Opens
                    }
                } else if nr > or || l.burst > o.burst && nr >= or {
                    Effect::Opens
                } else if nr < or || l.burst < o.burst {
                    Effect::Closes
                } else {
                    Effect::Changes
                };
                push(
                    format!("limit {name}"),
                    format!("{} → {}", show(o), show(l)),
                    effect,
                );
            }
            _ => {}
        }
    }
    // The shared store.
    let store = |p: &Policy| {
        p.shared_state
            .as_ref()
            .map(|s| format!("{} prefix {:?}", s.endpoint(), s.prefix))
    };
    match (store(old), store(new)) {
        (o, n) if o == n => {}
        (o, n) => push(
            "shared_state".into(),
            format!(
                "{} → {}",
                o.unwrap_or_else(|| "none".into()),
                n.unwrap_or_else(|| "none".into())
            ),
            Effect::Changes,
        ),
    }
    // Blocked paths and their exceptions.
    let ob = set(old.blocked.prefixes.iter().map(|b| b.to_string()));
    let nb = set(new.blocked.prefixes.iter().map(|b| b.to_string()));
    for p in ob.difference(&nb) {
        push(
            "blocked".into(),
            format!("{p} no longer blocked"),
            Effect::Opens,
        );
    }
    for p in nb.difference(&ob) {
        push("blocked".into(), format!("{p} now blocked"), Effect::Closes);
    }
    let exc = |p: &Policy| {
        set(p.blocked.exceptions.iter().map(|e| {
            format!(
                "{} for route {} until {} ({})",
                e.path, e.route, e.expires_text, e.reason
            )
        }))
    };
    let (oe, ne) = (exc(old), exc(new));
    for e in oe.difference(&ne) {
        push(
            "blocked".into(),
            format!("exception removed: {e}"),
            Effect::Closes,
        );
    }
    for e in ne.difference(&oe) {
        push(
            "blocked".into(),
            format!("exception added: {e}"),
            Effect::Opens,
        );
    }
    // Admin paths.
    let oa = set(old.admin.prefixes.iter().map(|b| b.to_string()));
    let na = set(new.admin.prefixes.iter().map(|b| b.to_string()));
    for p in oa.difference(&na) {
        push(
            "admin".into(),
            format!("{p} no longer an admin path"),
            Effect::Opens,
        );
    }
    for p in na.difference(&oa) {
        push(
            "admin".into(),
            format!("{p} now an admin path"),
            Effect::Closes,
        );
    }
    if old.admin.capability != new.admin.capability {
        push(
            "admin".into(),
            format!(
                "capability {} → {}",
                old.admin.capability, new.admin.capability
            ),
            Effect::Changes,
        );
    }
    let on = set(old.admin.networks.iter().map(|n| n.to_string()));
    let nn = set(new.admin.networks.iter().map(|n| n.to_string()));
    for n in nn.difference(&on) {
        push(
            "admin".into(),
            format!("network {n} admitted without the capability"),
            Effect::Opens,
        );
    }
    for n in on.difference(&nn) {
        push(
            "admin".into(),
            format!("network {n} no longer admitted"),
            Effect::Closes,
        );
    }
    // Rooms.
    if old.rooms.default_locked != new.rooms.default_locked {
        push(
            "rooms".into(),
            format!(
                "default access {} → {}",
                lock(old.rooms.default_locked),
                lock(new.rooms.default_locked)
            ),
            if new.rooms.default_locked {
                Effect::Closes
            } else {
                Effect::Opens
            },
        );
    }
    let rules = |p: &Policy| -> BTreeMap<String, (bool, BTreeSet<String>, bool)> {
        p.rooms
            .access
            .iter()
            .map(|a| {
                (
                    format!("{}{}", a.room, if a.prefix { "*" } else { "" }),
                    (
                        a.locked,
                        set(a.capabilities.iter().map(|c| c.to_string())),
                        a.shadow,
                    ),
                )
            })
            .collect()
    };
    let (orr, nrr) = (rules(old), rules(new));
    for room in orr.keys().chain(nrr.keys()).collect::<BTreeSet<_>>() {
        let o =
            orr.get(room)
                .cloned()
                .unwrap_or((old.rooms.default_locked, BTreeSet::new(), false));
        let n =
            nrr.get(room)
                .cloned()
                .unwrap_or((new.rooms.default_locked, BTreeSet::new(), false));
        if o == n {
            continue;
        }
        let show = |(locked, caps, shadow): &(bool, BTreeSet<String>, bool)| {
            format!(
                "{}{}{}",
                lock(*locked),
                if *locked && !caps.is_empty() {
                    format!(" (needs {})", list(caps))
                } else {
                    String::new()
                },
                if *shadow { " (shadow)" } else { "" }
            )
        };
        let effect = match (o.0 && !o.2, n.0 && !n.2) {
            (false, true) => Effect::Closes,
            (true, false) => Effect::Opens,
            (true, true) if n.1.is_superset(&o.1) => Effect::Closes,
            (true, true) if n.1.is_subset(&o.1) => Effect::Opens,
            _ => Effect::Changes,
        };
        push(
            format!("room {room}"),
            format!("{} → {}", show(&o), show(&n)),
            effect,
        );
    }
    // Transport-wide settings.
    let hsts = |p: &Policy| {
        p.hsts
            .as_ref()
            .map(|h| h.to_str().unwrap_or("").to_string())
            .unwrap_or_else(|| "off".into())
    };
    if hsts(old) != hsts(new) {
        push(
            "hsts".into(),
            format!("{} → {}", hsts(old), hsts(new)),
            Effect::Changes,
        );
    }
    let tp = |p: &Policy| set(p.network.trusted_proxies.iter().map(|n| n.to_string()));
    let (ot, nt) = (tp(old), tp(new));
    for n in nt.difference(&ot) {
        push(
            "network".into(),
            format!("trusted proxy {n} added"),
            Effect::Changes,
        );
    }
    for n in ot.difference(&nt) {
        push(
            "network".into(),
            format!("trusted proxy {n} removed"),
            Effect::Changes,
        );
    }
    if old.websocket != new.websocket {
        let w = |b: &crate::policy::specs::WsBudget| {
            format!(
                "{} B/s, {} msg/s, {} B max, idle {}s",
                b.bytes_per_second,
                b.messages_per_second,
                b.max_message_bytes,
                b.idle_timeout.as_secs()
            )
        };
        push(
            "websocket".into(),
            format!("budgets {} → {}", w(&old.websocket), w(&new.websocket)),
            Effect::Changes,
        );
    }
    out
}

fn lock(locked: bool) -> &'static str {
    if locked {
        "locked"
    } else {
        "open"
    }
}

fn route_changes(
    op: &Policy,
    o: &Route,
    np: &Policy,
    n: &Route,
    push: &mut dyn FnMut(String, Effect),
) {
    if access(o) != access(n) {
        let effect = match (o.public, n.public) {
            (false, true) => Effect::Opens,
            (true, false) => Effect::Closes,
            _ => {
                let (oa, na) = (
                    set(o.auth.iter().map(|p| p.as_str())),
                    set(n.auth.iter().map(|p| p.as_str())),
                );
                if n.auth.iter().any(|p| p.development_only()) || na.is_superset(&oa) {
                    Effect::Opens
                } else if na.is_subset(&oa) {
                    Effect::Closes
                } else {
                    Effect::Changes
                }
            }
        };
        let who = match (o.public, n.public) {
            (false, true) => " (anyone gains access)",
            (true, false) => " (anonymous callers lose access)",
            _ => "",
        };
        push(format!("access {} → {}{who}", access(o), access(n)), effect);
    }
    let (oc, nc) = (
        set(o.capabilities.iter().map(|c| c.to_string())),
        set(n.capabilities.iter().map(|c| c.to_string())),
    );
    if oc != nc {
        let dropped: Vec<_> = oc.difference(&nc).cloned().collect();
        let added: Vec<_> = nc.difference(&oc).cloned().collect();
        let mut why = Vec::new();
        if !dropped.is_empty() {
            why.push(format!(
                "callers without {} gain access",
                dropped.join(", ")
            ));
        }
        if !added.is_empty() {
            why.push(format!("callers without {} lose access", added.join(", ")));
        }
        let effect = match (dropped.is_empty(), added.is_empty()) {
            (false, true) => Effect::Opens,
            (true, false) => Effect::Closes,
            _ => Effect::Changes,
        };
        push(
            format!(
                "capabilities {} → {} ({})",
                list(&oc),
                list(&nc),
                why.join("; ")
            ),
            effect,
        );
    }
    if o.methods != n.methods {
        let (om, nm) = (set(o.methods.names()), set(n.methods.names()));
        let effect = if n.methods == super::model::MethodSet::ALL || nm.is_superset(&om) {
            Effect::Opens
        } else if o.methods == super::model::MethodSet::ALL || nm.is_subset(&om) {
            Effect::Closes
        } else {
            Effect::Changes
        };
        push(
            format!(
                "methods {} → {}",
                o.methods.names().join(","),
                n.methods.names().join(",")
            ),
            effect,
        );
    }
    let (oh, nh) = (hosts(o), hosts(n));
    if oh != nh {
        let effect = if nh.is_empty() || (!oh.is_empty() && nh.is_superset(&oh)) {
            Effect::Opens
        } else if oh.is_empty() || nh.is_subset(&oh) {
            Effect::Closes
        } else {
            Effect::Changes
        };
        push(
            format!(
                "hosts {} → {}",
                list(&oh).replace("(none)", "*"),
                list(&nh).replace("(none)", "*")
            ),
            effect,
        );
    }
    if o.prefix != n.prefix || o.case_sensitive != n.case_sensitive {
        push(
            format!(
                "path prefix {}{} → {}{}",
                o.prefix,
                if o.case_sensitive { "" } else { " (any case)" },
                n.prefix,
                if n.case_sensitive { "" } else { " (any case)" }
            ),
            Effect::Changes,
        );
    }
    let (ou, nu) = (&op.upstreams[o.upstream], &np.upstreams[n.upstream]);
    if ou.name != nu.name || ou.target != nu.target {
        push(
            format!(
                "upstream {} ({}) → {} ({})",
                ou.name,
                ou.target.kind(),
                nu.name,
                nu.target.kind()
            ),
            Effect::Changes,
        );
    }
    let flags = [
        ("websocket", o.websocket, n.websocket),
        ("query_token", o.query_token, n.query_token),
        ("signed_urls", o.signed_urls, n.signed_urls),
        (
            "forward_authorization",
            o.forward_authorization,
            n.forward_authorization,
        ),
    ];
    for (name, a, b) in flags {
        if a != b {
            push(
                format!("{name} {} → {}", onoff(a), onoff(b)),
                if b { Effect::Opens } else { Effect::Closes },
            );
        }
    }
    if o.max_body_bytes != n.max_body_bytes {
        push(
            format!("max_body_bytes {} → {}", o.max_body_bytes, n.max_body_bytes),
            if n.max_body_bytes > o.max_body_bytes {
                Effect::Opens
            } else {
                Effect::Closes
            },
        );
    }
    let cors = |r: &Route| {
        r.cors.as_ref().map(|c| {
            let mut o = set(c.origins.iter().map(|s| s.to_string()));
            if c.any_origin {
                o.insert("*".into());
            }
            (o, c.credentials)
        })
    };
    let (occ, ncc) = (cors(o), cors(n));
    if occ != ncc {
        let show = |c: &Option<(BTreeSet<String>, bool)>| match c {
            None => "off".to_string(),
            Some((o, cred)) => format!(
                "{}{}",
                list(o),
                if *cred { " with credentials" } else { "" }
            ),
        };
        let effect = match (&occ, &ncc) {
            (None, Some(_)) => Effect::Opens,
            (Some(_), None) => Effect::Closes,
            (Some((a, _)), Some((b, _))) if b.is_superset(a) => Effect::Opens,
            (Some((a, _)), Some((b, _))) if b.is_subset(a) => Effect::Closes,
            _ => Effect::Changes,
        };
        push(
            format!("cors origins {} → {}", show(&occ), show(&ncc)),
            effect,
        );
    }
    if o.csrf.is_some() != n.csrf.is_some() {
        push(
            format!(
                "csrf checks {} → {}",
                onoff(o.csrf.is_some()),
                onoff(n.csrf.is_some())
            ),
            if n.csrf.is_some() {
                Effect::Closes
            } else {
                Effect::Opens
            },
        );
    }
    if op.headers.profiles[o.headers].name != np.headers.profiles[n.headers].name {
        push(
            format!(
                "security headers {} → {}",
                op.headers.profiles[o.headers].name, np.headers.profiles[n.headers].name
            ),
            Effect::Changes,
        );
    }
}

fn onoff(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The printed form: one line per change, then a count.
pub fn render(changes: &[Change]) -> String {
    let mut out = String::new();
    for c in changes {
        let _ = writeln!(out, "[{}] {}: {}", c.effect.tag(), c.subject, c.text);
    }
    let n = |e| changes.iter().filter(|c| c.effect == e).count();
    let _ = writeln!(
        out,
        "{} change(s): {} open access, {} close access, {} other",
        changes.len(),
        n(Effect::Opens),
        n(Effect::Closes),
        n(Effect::Changes)
    );
    out
}
