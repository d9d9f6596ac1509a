//! Path decisions against a policy: the one code path both the proxy and `portcullis selftest
//! paths` use, so the self-test proves what the gateway does rather than a copy of it.

use std::borrow::Cow;

use super::model::{self, BlockException, Policy};
use crate::http::deny::Deny;
use crate::http::path::{canonicalize, Readings, Under};

/// What screening a path found, kept for the request's later checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screened {
    /// Index of the blocked prefix the path is under in any reading.
    pub blocked: Option<usize>,
    /// An admin prefix covers the path (see `AdminPaths::covers`).
    pub admin: bool,
}

/// Where a request target lands.
#[derive(Debug)]
pub enum PathVerdict<'p> {
    /// Refused before any upstream sees it.
    Refused(Deny),
    /// Served by route `index`; `Some(exception)` when a blocked path was opened for it.
    Routed(usize, Option<&'p BlockException>),
}

impl Policy {
    /// Canonicalizes a request path and refuses the ambiguous ones: bad encodings (400), and
    /// readings a lenient backend may take for a blocked or an admin path while the path itself
    /// is not one — `;` parameters (also `%3B`, and `..;`) removed (400), lookalikes such as a
    /// trailing space or fullwidth letters (400, see `lookalikes`). Blocked and admin prefixes
    /// are judged by the one function, `Readings::under`.
    pub fn screen_path<'a>(&self, raw: &'a str) -> Result<Cow<'a, str>, Deny> {
        self.screen(raw).map(|(c, _)| c)
    }

    /// `screen_path`, also answering what it found: the blocked prefix and whether an admin
    /// prefix covers the path, so the request's later checks need not read the path again.
    pub fn screen<'a>(&self, raw: &'a str) -> Result<(Cow<'a, str>, Screened), Deny> {
        let canonical = canonicalize(raw).map_err(Deny::BadPath)?;
        let readings = Readings::of(&canonical);
        let (blocked, found) = model::classify_at(
            &self.blocked.prefixes,
            self.blocked.case_sensitive,
            &readings,
        );
        match blocked {
            Under::Parameter => return Err(Deny::PathParameterOnBlocked),
            Under::Lookalike => return Err(Deny::LookalikeOfBlocked),
            Under::Yes | Under::No => {}
        }
        let admin = self.admin.classify(&readings);
        match admin {
            Under::Parameter => return Err(Deny::PathParameterOnAdmin),
            Under::Lookalike => return Err(Deny::LookalikeOfAdmin),
            Under::Yes | Under::No => {}
        }
        let screened = Screened {
            blocked: found,
            admin: admin != Under::No,
        };
        Ok((canonical, screened))
    }

    /// The route for a canonical path, after the blocked-path check (with its exceptions).
    pub fn decide_path(&self, host: &str, path: &str, now: u64) -> PathVerdict<'_> {
        let found = self.blocked.find(path);
        self.decide_found(host, path, found, now)
    }

    /// `decide_path` for a path `screen` has read: its blocked prefix is already known.
    pub fn decide_screened(
        &self,
        host: &str,
        path: &str,
        screened: Screened,
        now: u64,
    ) -> PathVerdict<'_> {
        let found = screened.blocked.map(|i| &*self.blocked.prefixes[i]);
        self.decide_found(host, path, found, now)
    }

    fn decide_found<'p>(
        &'p self,
        host: &str,
        path: &str,
        found: Option<&'p str>,
        now: u64,
    ) -> PathVerdict<'p> {
        let route = self
            .routes
            .iter()
            .position(|r| r.matches_path(path) && r.matches_host(host));
        let name = route.map(|i| &*self.routes[i].name);
        match self.blocked.decide_found(found, path, name, now) {
            Err(_) => PathVerdict::Refused(Deny::BlockedPath),
            Ok(exception) => match route {
                Some(i) => PathVerdict::Routed(i, exception),
                None => PathVerdict::Refused(Deny::NoRoute),
            },
        }
    }

    /// The whole decision for a raw request target as sent on the request line, with `Host`
    /// `host`: what `selftest paths` runs for each corpus entry.
    pub fn decide_target(&self, host: &str, target: &str, now: u64) -> PathVerdict<'_> {
        let target = match origin_form(target.as_bytes(), Some(host.as_bytes())) {
            Err(d) => return PathVerdict::Refused(d),
            Ok(true) => target,
            // Absolute-form naming this host: its path and query.
            Ok(false) => {
                let rest = &target[target.find("://").map_or(0, |i| i + 3)..];
                match rest.find(['/', '?']) {
                    Some(i) if rest[i..].starts_with('/') => &rest[i..],
                    _ => "/",
                }
            }
        };
        // What the request-line parser makes of it.
        let uri: http::Uri = match target.parse() {
            Ok(u) => u,
            Err(_) => {
                return PathVerdict::Refused(Deny::BadPath(
                    crate::http::path::PathError::BadPercent,
                ))
            }
        };
        let path = match self.screen_path(uri.path()) {
            Ok(p) => p,
            Err(d) => return PathVerdict::Refused(d),
        };
        let Some(host_only) = crate::http::host::normalize(host) else {
            return PathVerdict::Refused(Deny::BadHost);
        };
        self.decide_path(host_only, &path, now)
    }
}

/// Checks a raw request target. Origin-form (`/path?query`) is `Ok(true)` (the URI is the
/// target); absolute-form naming the request's own `Host` is `Ok(false)` (the URI holds its path
/// and must replace the raw bytes); anything else — another host, userinfo, authority-form, `*`,
/// a target not starting with `/` such as `\path`, non-UTF-8 — is refused. Pingora keeps such
/// targets verbatim for the wire while its URI shows only a path (or `/`), so checking the URI
/// alone would judge one path and forward another.
pub fn origin_form(raw: &[u8], host: Option<&[u8]>) -> Result<bool, Deny> {
    use crate::http::path::PathError;
    if raw.first() == Some(&b'/') {
        return match std::str::from_utf8(raw) {
            Ok(_) => Ok(true),
            Err(_) => Err(Deny::BadPath(PathError::InvalidUtf8)),
        };
    }
    let lower = |n: usize| raw.get(..n).map(|p| p.to_ascii_lowercase());
    let rest = if lower(7).as_deref() == Some(b"http://") {
        &raw[7..]
    } else if lower(8).as_deref() == Some(b"https://") {
        &raw[8..]
    } else {
        return Err(Deny::BadPath(PathError::NotAbsolute));
    };
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    let same_host = host.is_some_and(|h| h.eq_ignore_ascii_case(authority));
    if authority.is_empty() || authority.contains(&b'@') || !same_host {
        return Err(Deny::ForeignAbsoluteTarget);
    }
    if std::str::from_utf8(rest).is_err() {
        return Err(Deny::BadPath(PathError::InvalidUtf8));
    }
    Ok(false)
}

/// Encodes every byte of `s` as `%XX` (upper or lower hex).
fn encode_all(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| {
            if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            }
        })
        .collect()
}

/// Known bypass spellings of a blocked prefix (`/terminal`): dot segments, merged and encoded
/// slashes, encoded and double-encoded characters, case, path parameters (also `%3B`), trailing
/// whitespace before `;` or on `..`, backslashes, control bytes, overlong UTF-8 and absolute-form
/// targets. `case` says whether case variants belong in
/// the set (they do when blocked prefixes match case-insensitively).
pub fn bypass_corpus(prefix: &str, case: bool) -> Vec<String> {
    let rest = prefix.trim_start_matches('/');
    let (first, tail) = rest.split_at(rest.chars().next().map(|c| c.len_utf8()).unwrap_or(0));
    let fb = first.as_bytes().first().copied().unwrap_or(b'x');
    let mut v = vec![
        prefix.to_string(),
        format!("{prefix}/"),
        format!("{prefix}/x"),
        format!("{prefix}/."),
        format!("{prefix}/x/.."),
        format!("{prefix}?x=1"),
        format!("/{prefix}"),
        format!("//{rest}/x"),
        format!("///{rest}"),
        format!("/./{rest}"),
        format!("/././{rest}"),
        format!("/x/../{rest}"),
        format!("/a/b/../../{rest}"),
        format!("/../{rest}"),
        format!("/../../{rest}/x"),
        format!("/%{fb:02x}{tail}"),
        format!("/%{fb:02X}{tail}"),
        format!("/{}", encode_all(rest, true)),
        format!("/{}", encode_all(rest, false)),
        format!("/%25{fb:02x}{tail}"),
        format!("/%2f{rest}"),
        format!("/%2F{rest}"),
        format!("/x%2f..%2f{rest}"),
        format!("/%2e/{rest}"),
        format!("/%2e%2e/{rest}"),
        format!("/x/%2e%2e/{rest}"),
        format!("/.%2e/{rest}"),
        format!("/x/.%2E/{rest}"),
        format!("/%252e%252e/{rest}"),
        format!("{prefix}%2f"),
        format!("{prefix}%2Fx"),
        format!("{prefix}/..%2f"),
        format!("{prefix};a"),
        format!("{prefix};a=1/x"),
        format!("{prefix}%3Ba"),
        format!("{prefix}%3b"),
        format!("/x/..%3B/{rest}"),
        format!("{prefix}%20;a"),
        format!("/x/..%20/{rest}"),
        format!("/x/..;/{rest}"),
        format!("/;/{rest}"),
        format!("/x;y/../{rest}"),
        format!("\\{rest}"),
        format!("/x\\..\\{rest}"),
        format!("/%5c{rest}"),
        format!("/x%5c..%5c{rest}"),
        format!("/x%5C..%5C{rest}"),
        format!("{prefix}%00"),
        format!("/%00/../{rest}"),
        format!("{prefix}%0a"),
        format!("{prefix}%0d%0a"),
        format!("{prefix}%09"),
        format!("{prefix}%7f"),
        format!("/%c0%ae%c0%ae/{rest}"),
        format!("/x%c0%af..%c0%af{rest}"),
        format!("/%e0%80%ae%e0%80%ae/{rest}"),
        format!("/%c0%2e%c0%2e/{rest}"),
        format!("/%u002e%u002e/{rest}"),
        format!("https://localhost{prefix}"),
        format!("https://evil.example{prefix}"),
        format!("http://localhost:1{prefix}"),
        // Lookalikes a lenient backend may take for the prefix.
        format!("{prefix}.json"),
        format!("{prefix}%20"),
        format!("{prefix}~"),
        format!("{prefix}%23"),
        prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap_or(c)
                } else {
                    c
                }
            })
            .collect(),
    ];
    if case {
        let upper = prefix.to_ascii_uppercase();
        let mixed: String = prefix
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        v.push(upper.clone());
        v.push(format!("{upper}/x"));
        v.push(mixed.clone());
        v.push(format!("/x/..{mixed}"));
        v.push(format!(
            "/{}",
            encode_all(&rest.to_ascii_uppercase(), false)
        ));
    }
    v.sort();
    v.dedup();
    v
}

/// A variant of `prefix` built from `choices` (one byte per decision): noise before it, each
/// character literal, case-flipped, percent-encoded (either hex case) or double-encoded, each
/// inner `/` doubled, dotted or encoded, and a suffix. Property tests feed it random bytes;
/// every output spells the blocked path (or an ambiguous form of it).
#[doc(hidden)]
pub fn encode_variant(prefix: &str, choices: &[u8], case: bool) -> String {
    let mut it = choices.iter().copied().chain(std::iter::repeat(0));
    let mut next = |n: u8| it.next().unwrap_or(0) % n;
    let mut out = String::new();
    out.push_str(["", "/", "/.", "/x/..", "/./.", "/a/b/../..", "//."][next(7) as usize]);
    for (i, b) in prefix.bytes().enumerate() {
        if b == b'/' {
            out.push_str(if i == 0 {
                ["/", "//", "/./", "/x/../", "/%2F"][next(5) as usize]
            } else {
                ["/", "//", "/./", "%2F", "/x/../", "%5C", "\\"][next(7) as usize]
            });
            continue;
        }
        match next(5) {
            0 => out.push(b as char),
            1 if case => out.push(if b.is_ascii_lowercase() {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            } as char),
            1 => out.push(b as char),
            2 => out.push_str(&format!("%{b:02x}")),
            3 => out.push_str(&format!("%{b:02X}")),
            _ => out.push_str(&format!("%25{b:02X}")),
        }
    }
    out.push_str(
        [
            "", "/", "/x", ";p", "%2f", "/..;/x", "?q=1", "/.", "%00", ";/x",
        ][next(10) as usize],
    );
    out
}

/// One blocked prefix's self-test result.
#[derive(Debug)]
pub struct PrefixReport {
    pub prefix: String,
    pub refused: usize,
    /// Variants opened by an exception: (variant, route, reason, expiry).
    pub opened: Vec<(String, String, String, String)>,
    /// Variants that would reach an upstream: (variant, route).
    pub leaked: Vec<(String, String)>,
    pub case_skipped: bool,
}

/// Runs the corpus for every blocked prefix against `policy` with `Host: localhost`.
pub fn selftest(policy: &Policy, now: u64) -> Vec<PrefixReport> {
    let case = !policy.blocked.case_sensitive;
    policy
        .blocked
        .prefixes
        .iter()
        .map(|prefix| {
            let mut r = PrefixReport {
                prefix: prefix.to_string(),
                refused: 0,
                opened: Vec::new(),
                leaked: Vec::new(),
                case_skipped: !case,
            };
            for variant in bypass_corpus(prefix, case) {
                match policy.decide_target("localhost", &variant, now) {
                    PathVerdict::Refused(_) => r.refused += 1,
                    PathVerdict::Routed(i, Some(e)) => r.opened.push((
                        variant,
                        policy.routes[i].name.to_string(),
                        e.reason.to_string(),
                        e.expires_text.to_string(),
                    )),
                    PathVerdict::Routed(i, None) => {
                        r.leaked.push((variant, policy.routes[i].name.to_string()))
                    }
                }
            }
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::config::Mode;
    use crate::policy::SourceFile;

    fn policy(text: &str) -> Policy {
        compile(
            &[SourceFile {
                path: "p.toml".into(),
                text: text.into(),
            }],
            Mode::Development,
        )
        .unwrap()
    }

    const CATCH_ALL: &str = r#"
[[upstreams]]
name = "w"
kind = "worker"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "w"
public = true

[blocked]
paths = ["/.git", "/debug/pprof", "/actuator"]
"#;

    /// What the proxy keeps from screening is what `find` and `covers` answer on their own.
    #[test]
    fn screening_answers_what_find_and_covers_would() {
        let p = policy(&format!(
            "{CATCH_ALL}\n[admin]\npaths = [\"/admin/\", \"/internal\"]\n"
        ));
        let mut paths: Vec<String> = ["/v1/models", "/administrator", "/a/../admin", "/internal/x"]
            .map(String::from)
            .to_vec();
        for prefix in ["/.git", "/debug/pprof", "/admin", "/internal", "/x"] {
            paths.extend(bypass_corpus(prefix, true));
        }
        let (mut blocked, mut admin) = (0, 0);
        for raw in &paths {
            let Ok((canonical, screened)) = p.screen(raw) else {
                continue;
            };
            let found = screened.blocked.map(|i| &*p.blocked.prefixes[i]);
            assert_eq!(found, p.blocked.find(&canonical), "{raw}");
            assert_eq!(screened.admin, p.admin.covers(&canonical), "{raw}");
            blocked += usize::from(found.is_some());
            admin += usize::from(screened.admin);
        }
        assert!(blocked > 10 && admin > 10, "{blocked} {admin}");
    }

    #[test]
    fn the_corpus_is_large_and_all_refused_behind_a_catch_all_route() {
        let p = policy(CATCH_ALL);
        let corpus = bypass_corpus("/terminal", true);
        assert!(corpus.len() >= 50, "{}", corpus.len());
        for r in selftest(&p, 0) {
            assert!(r.leaked.is_empty(), "{}: {:?}", r.prefix, r.leaked);
            assert!(r.refused >= 50, "{}: {}", r.prefix, r.refused);
        }
        // The catch-all does serve ordinary paths: the self-test can fail.
        assert!(matches!(
            p.decide_target("localhost", "/terminals", 0),
            PathVerdict::Routed(0, None)
        ));
    }

    #[test]
    fn exceptions_open_for_their_route_until_they_expire() {
        let text = format!(
            "{CATCH_ALL}\n[[blocked.exceptions]]\npath = \"/actuator/health\"\nroute = \"all\"\nreason = \"OPS-1 probe\"\nexpires_at = 2030-01-01T00:00:00Z\n"
        );
        let p = policy(&text);
        let before = 1_800_000_000; // 2027
        let after = 1_900_000_000; // 2030
        assert!(matches!(
            p.decide_target("localhost", "/actuator/health", before),
            PathVerdict::Routed(0, Some(_))
        ));
        assert!(matches!(
            p.decide_target("localhost", "/actuator/env", before),
            PathVerdict::Refused(Deny::BlockedPath)
        ));
        assert!(matches!(
            p.decide_target("localhost", "/actuator/health", after),
            PathVerdict::Refused(Deny::BlockedPath)
        ));
    }

    #[test]
    fn only_origin_form_or_own_absolute_form_targets_pass() {
        use crate::http::path::PathError;
        let h = Some(&b"localhost:8443"[..]);
        assert_eq!(origin_form(b"/v1/x?q", h), Ok(true));
        assert_eq!(origin_form(b"https://localhost:8443/v1", h), Ok(false));
        assert_eq!(origin_form(b"HTTP://LOCALHOST:8443", h), Ok(false));
        for bad in [
            &b"https://evil.example/v1"[..],
            b"https://user@localhost:8443/v1",
            b"https:///v1",
        ] {
            assert_eq!(origin_form(bad, h), Err(Deny::ForeignAbsoluteTarget));
        }
        assert_eq!(
            origin_form(b"https://localhost:8443/v1", None),
            Err(Deny::ForeignAbsoluteTarget)
        );
        for bad in [&b"\\terminal"[..], b"*", b"localhost:443", b"terminal", b""] {
            assert_eq!(
                origin_form(bad, h),
                Err(Deny::BadPath(PathError::NotAbsolute)),
                "{bad:?}"
            );
        }
        assert_eq!(
            origin_form(b"/\xffterminal", h),
            Err(Deny::BadPath(PathError::InvalidUtf8))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Random encodings of a blocked path never reach a route, even behind a catch-all.
        #[test]
        fn random_encodings_of_blocked_paths_are_refused(
            which in 0usize..4,
            choices in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let p = policy(CATCH_ALL);
            let prefix = ["/terminal", "/.git", "/debug/pprof", "/actuator"][which];
            let v = encode_variant(prefix, &choices, true);
            let verdict = p.decide_target("localhost", &v, 0);
            proptest::prop_assert!(
                matches!(verdict, PathVerdict::Refused(_)),
                "{} reached {:?}", v, verdict
            );
        }
    }

    #[test]
    fn parameters_hiding_a_blocked_path_are_400() {
        let p = policy(CATCH_ALL);
        for t in ["/terminal;a", "/x/..;/terminal", "/.git;x/config"] {
            assert!(
                matches!(
                    p.decide_target("localhost", t, 0),
                    PathVerdict::Refused(Deny::PathParameterOnBlocked)
                ),
                "{t}"
            );
        }
        assert!(matches!(
            p.decide_target("localhost", "/v1;jsessionid=1/models", 0),
            PathVerdict::Routed(0, None)
        ));
    }
}
