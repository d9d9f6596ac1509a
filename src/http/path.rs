//! Path canonicalization: one canonical path per request, used for matching *and* forwarding so
//! the gateway and the backend never read a path differently. Ambiguous encodings are refused
//! rather than guessed at.

use std::borrow::Cow;
use std::fmt;

/// Why a path was refused. Each is answered 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    EncodedSeparator,
    EncodedDot,
    DoubleEncoding,
    BadPercent,
    ControlByte,
    Backslash,
    InvalidUtf8,
}

impl PathError {
    pub fn code(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::EncodedSeparator => "path_encoded_separator",
            PathError::EncodedDot => "path_encoded_dot",
            PathError::DoubleEncoding => "path_double_encoding",
            PathError::BadPercent => "path_bad_percent_encoding",
            PathError::ControlByte => "path_control_byte",
            PathError::Backslash => "path_backslash",
            PathError::InvalidUtf8 => "path_invalid_utf8",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "does not start with '/'",
            PathError::EncodedSeparator => "contains an encoded '/' or '\\'",
            PathError::EncodedDot => "contains an encoded '.'",
            PathError::DoubleEncoding => "contains a double percent-encoding",
            PathError::BadPercent => "contains a malformed percent-encoding",
            PathError::ControlByte => "contains a control byte",
            PathError::Backslash => "contains a backslash",
            PathError::InvalidUtf8 => "is not UTF-8 after decoding",
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The byte at `at` as the rewrite will leave it, and how many input bytes it takes: an escaped
/// unreserved character decodes to itself, anything else stays as it is.
fn decoded_at(bytes: &[u8], at: usize) -> Option<(u8, usize)> {
    let b = *bytes.get(at)?;
    if b == b'%' {
        if let (Some(h), Some(l)) = (
            bytes.get(at + 1).and_then(|b| hex(*b)),
            bytes.get(at + 2).and_then(|b| hex(*b)),
        ) {
            let v = h << 4 | l;
            if is_unreserved_safe(v) {
                return Some((v, 3));
            }
        }
    }
    Some((b, 1))
}

fn is_unreserved_safe(b: u8) -> bool {
    // Unreserved characters other than '.', which is refused when encoded.
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

/// Canonicalizes the path part of a request target (no query).
///
/// Percent-encoded unreserved characters are decoded, other escapes are kept with upper-case hex;
/// `.` and `..` segments are resolved (never above `/`); repeated slashes are merged. The result
/// is borrowed when the input was already canonical, which is the common case.
pub fn canonicalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // Validate bytes and escapes; note whether any rewriting is needed.
    let mut needs_rewrite = false;
    let mut decoded_high: Option<Vec<u8>> = None;
    let mut i = 0;
    let mut prev = 0u8;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            0..=0x1f | 0x7f => return Err(PathError::ControlByte),
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let (h, l) = match (
                    bytes.get(i + 1).and_then(|b| hex(*b)),
                    bytes.get(i + 2).and_then(|b| hex(*b)),
                ) {
                    (Some(h), Some(l)) => (h, l),
                    _ => return Err(PathError::BadPercent),
                };
                let v = h << 4 | l;
                match v {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b'.' => return Err(PathError::EncodedDot),
                    b'%' => {
                        // Judged on what follows *after* decoding: `%25%65%32` becomes
                        // `%25e2` just as `%25e2` does.
                        let next_is_hex = match decoded_at(bytes, i + 3) {
                            Some((a, n)) if hex(a).is_some() => {
                                decoded_at(bytes, i + 3 + n).is_some_and(|(b, _)| hex(b).is_some())
                            }
                            _ => false,
                        };
                        if next_is_hex {
                            return Err(PathError::DoubleEncoding);
                        }
                    }
                    0..=0x1f | 0x7f => return Err(PathError::ControlByte),
                    _ => {}
                }
                if is_unreserved_safe(v)
                    || bytes[i + 1].is_ascii_lowercase()
                    || bytes[i + 2].is_ascii_lowercase()
                {
                    needs_rewrite = true;
                }
                if v >= 0x80 {
                    decoded_high.get_or_insert_with(Vec::new);
                }
                i += 3;
                prev = b'%';
                continue;
            }
            b'/' if prev == b'/' => needs_rewrite = true,
            b'.' if prev == b'/' => {
                let seg_end = bytes[i..]
                    .iter()
                    .position(|c| *c == b'/')
                    .map(|p| i + p)
                    .unwrap_or(bytes.len());
                let seg = &bytes[i..seg_end];
                if seg == b"." || seg == b".." {
                    needs_rewrite = true;
                }
            }
            _ => {}
        }
        prev = b;
        i += 1;
    }
    if decoded_high.is_some() && !decodes_to_utf8(bytes) {
        return Err(PathError::InvalidUtf8);
    }
    if !needs_rewrite {
        return Ok(Cow::Borrowed(raw));
    }

    // Rewrite: decode safe escapes, then resolve segments.
    let mut normalized = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let v = hex(bytes[i + 1]).unwrap_or(0) << 4 | hex(bytes[i + 2]).unwrap_or(0);
            if is_unreserved_safe(v) {
                normalized.push(v as char);
            } else {
                normalized.push('%');
                normalized.push(bytes[i + 1].to_ascii_uppercase() as char);
                normalized.push(bytes[i + 2].to_ascii_uppercase() as char);
            }
            i += 3;
        } else {
            // Safe: `raw` is a &str and we copy whole UTF-8 sequences byte-run by byte-run.
            let start = i;
            while i < bytes.len() && bytes[i] != b'%' {
                i += 1;
            }
            normalized.push_str(&raw[start..i]);
        }
    }
    let trailing =
        normalized.ends_with('/') || normalized.ends_with("/.") || normalized.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for seg in normalized.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(normalized.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The path with `;` parameters removed from every segment (`/a;x/b;y=1` → `/a/b`), re-canonicalized,
/// or `None` when the path has none. Some servers (Tomcat, Jetty, Spring) drop them before
/// routing, so a backend may read `/..;/terminal` as `/terminal`, and some decode `%3B` first: an
/// encoded `;` starts a parameter here too. The gateway checks this view against its protected
/// prefixes as well as the path itself.
pub fn without_params(path: &str) -> Option<String> {
    if !has_params(path) {
        return None;
    }
    let stripped: String = path
        .split('/')
        .map(|seg| &seg[..param_start(seg).unwrap_or(seg.len())])
        .collect::<Vec<_>>()
        .join("/");
    let stripped = if stripped.is_empty() {
        "/".to_string()
    } else {
        stripped
    };
    Some(rewritten(&stripped).unwrap_or(stripped))
}

/// `path` canonicalized when that changes it; `None` when it is canonical already or refused.
fn rewritten(path: &str) -> Option<String> {
    match canonicalize(path) {
        Ok(Cow::Owned(c)) => Some(c),
        _ => None,
    }
}

/// Whether `path` has a `;` parameter, literal or encoded as `%3B`.
fn has_params(path: &str) -> bool {
    param_start(path).is_some()
}

/// Where the first `;` or `%3B` (either hex case) in `s` starts.
fn param_start(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len()).find(|&i| {
        b[i] == b';'
            || (b[i] == b'%'
                && b.get(i + 1) == Some(&b'3')
                && matches!(b.get(i + 2), Some(b'b' | b'B')))
    })
}

/// How a canonical path stands to a protected prefix (a blocked or an admin path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Under {
    /// Under the prefix in no reading.
    No,
    /// The path itself is under the prefix (a whole segment, never `/prefix;x`).
    Yes,
    /// Under it once `;` parameters (or `%3B`) are removed and `..;` resolved, as Tomcat, Jetty
    /// and Spring do: ambiguous, refused.
    Parameter,
    /// Under it as a lenient backend reads it (trailing whitespace or junk on a segment, an
    /// extension, fullwidth letters; see `lookalikes`): ambiguous, refused.
    Lookalike,
}

/// The readings of one canonical path that some backend may take: the path itself, the path
/// without parameters, and the lookalikes of both (dot segments resolved). Built once per
/// request; costs nothing for a path with no `;`, `%`, `.`, `~`, `#`, `?`, whitespace or
/// non-ASCII byte.
#[derive(Debug)]
pub struct Readings<'a> {
    canonical: &'a str,
    params: Option<String>,
    lookalikes: Vec<String>,
}

impl<'a> Readings<'a> {
    pub fn of(canonical: &'a str) -> Readings<'a> {
        let params = without_params(canonical);
        let mut lookalikes = Vec::new();
        for form in std::iter::once(canonical)
            .chain(params.as_deref())
            .flat_map(self::lookalikes)
        {
            // A backend that trims `..%20` to `..` then resolves it.
            let form = rewritten(&form).unwrap_or(form);
            // A fullwidth `；` folds to a parameter separator.
            let stripped = without_params(&form);
            for form in std::iter::once(form).chain(stripped) {
                if form != canonical && !lookalikes.contains(&form) {
                    lookalikes.push(form);
                }
            }
        }
        Readings {
            canonical,
            params,
            lookalikes,
        }
    }

    /// Whether the path has readings other than itself.
    pub fn is_plain(&self) -> bool {
        self.params.is_none() && self.lookalikes.is_empty()
    }

    /// The one decision "is this path under `prefix`" for blocked and admin paths alike.
    pub fn under(&self, prefix: &str, case_sensitive: bool) -> Under {
        if under_segment(prefix, self.canonical, case_sensitive) {
            return Under::Yes;
        }
        if self
            .params
            .as_deref()
            .is_some_and(|p| under_segment(prefix, p, case_sensitive))
        {
            return Under::Parameter;
        }
        if self
            .lookalikes
            .iter()
            .any(|l| under_segment(prefix, l, case_sensitive))
        {
            return Under::Lookalike;
        }
        Under::No
    }
}

/// `path` starts with `prefix` as whole segments: `/admin` covers `/admin` and `/admin/x`,
/// not `/adminx` nor `/admin;x`.
fn under_segment(prefix: &str, path: &str, case_sensitive: bool) -> bool {
    head_matches(prefix, path, case_sensitive)
        && (prefix.ends_with('/')
            || path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/')
}

fn head_matches(prefix: &str, path: &str, case_sensitive: bool) -> bool {
    if path.len() < prefix.len() || !path.is_char_boundary(prefix.len()) {
        return false;
    }
    let head = &path[..prefix.len()];
    if case_sensitive {
        head == prefix
    } else {
        head.eq_ignore_ascii_case(prefix)
    }
}

/// What a lenient backend might take a canonical path for: fullwidth letters folded to ASCII
/// (Unicode compatibility normalization), and in each segment trailing spaces, tabs, `~`, `.`,
/// `#` and `?` (percent-encoded or not) and a trailing `.extension` removed (suffix matching, as
/// some frameworks do), each form on its own; a segment of dots and junk stays a dot segment
/// (`..%20` is `..`). Empty when that changes nothing. Only used to
/// refuse lookalikes of blocked paths; the request still goes upstream as sent.
pub fn lookalikes(path: &str) -> Vec<String> {
    let suspicious = path
        .bytes()
        .any(|b| matches!(b, b'%' | b'~' | b'.' | b'#' | b'?' | b' ' | b'\t') || b >= 0x80);
    if !suspicious {
        return Vec::new();
    }
    // Decode every escape: the comparison is on characters, not on their spelling.
    let bytes = path.as_bytes();
    let mut raw = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                raw.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        raw.push(bytes[i]);
        i += 1;
    }
    let text = String::from_utf8_lossy(&raw);
    let folded: String = text
        .chars()
        .map(|c| match c as u32 {
            // Fullwidth ASCII variants (U+FF01..U+FF5E) and the ideographic space.
            0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap_or(c),
            0x3000 => ' ',
            // Letters whose case mapping is ASCII (dotless `ı`, long `ſ`, the Kelvin sign): a
            // backend comparing case-insensitively by Unicode rules reads them as `I`, `S`, `k`.
            _ if !c.is_ascii() => ascii_case_of(c).unwrap_or(c),
            _ => c,
        })
        .collect();
    // A segment of dots and junk (`..%20`, `..~`) is a dot segment to a backend that trims it.
    let trim = |s: &str| {
        let t = s.trim_end_matches([' ', '\t', '~', '.', '#', '?', '\0']);
        match t {
            "" if s.starts_with("..") => "..".to_string(),
            "" if s.starts_with('.') => ".".to_string(),
            t => t.to_string(),
        }
    };
    let trimmed: Vec<String> = folded.split('/').map(trim).collect();
    // A trailing extension off each segment, but never the whole of a dot-file's name.
    let stemmed: Vec<String> = trimmed
        .iter()
        .map(
            |seg| match seg.rfind('.').filter(|&d| d > 0 && seg != "..") {
                Some(dot) => trim(&seg[..dot]),
                None => seg.clone(),
            },
        )
        .collect();
    let mut out = Vec::new();
    for form in [trimmed.join("/"), stemmed.join("/")] {
        if form != path && !out.contains(&form) {
            out.push(form);
        }
    }
    out
}

/// The ASCII letter a non-ASCII character upper- or lower-cases to, if its mapping is exactly
/// one ASCII character.
fn ascii_case_of(c: char) -> Option<char> {
    fn single_ascii(mut it: impl Iterator<Item = char>) -> Option<char> {
        let a = it.next()?;
        (a.is_ascii() && it.next().is_none()).then_some(a)
    }
    single_ascii(c.to_uppercase()).or_else(|| single_ascii(c.to_lowercase()))
}

fn decodes_to_utf8(bytes: &[u8]) -> bool {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(hex(bytes[i + 1]).unwrap_or(0) << 4 | hex(bytes[i + 2]).unwrap_or(0));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    std::str::from_utf8(&out).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> String {
        canonicalize(p).unwrap().into_owned()
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        assert!(matches!(
            canonicalize("/v1/models").unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(canonicalize("/").unwrap(), Cow::Borrowed(_)));
        assert!(matches!(canonicalize("/a%20b").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn dot_segments_and_slashes_are_resolved() {
        assert_eq!(ok("//terminal"), "/terminal");
        assert_eq!(ok("/a/./b"), "/a/b");
        assert_eq!(ok("/a/../terminal"), "/terminal");
        assert_eq!(ok("/../../terminal/x"), "/terminal/x");
        assert_eq!(ok("/a/b/.."), "/a/");
        assert_eq!(ok("/terminal/"), "/terminal/");
        assert_eq!(ok("/.."), "/");
        assert_eq!(ok("/a/.hidden"), "/a/.hidden");
        assert_eq!(ok("/a/..b"), "/a/..b");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(ok("/%74erminal"), "/terminal");
        assert_eq!(ok("/a%3bb"), "/a%3Bb");
        assert_eq!(ok("/caf%C3%A9"), "/caf%C3%A9");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(canonicalize("/a%2fb"), Err(PathError::EncodedSeparator));
        assert_eq!(canonicalize("/a%5Cb"), Err(PathError::EncodedSeparator));
        assert_eq!(canonicalize("/%2e%2e/terminal"), Err(PathError::EncodedDot));
        assert_eq!(canonicalize("/%252e"), Err(PathError::DoubleEncoding));
        // Found by the cargo-fuzz target `path`: the hex digits after `%25` arrive escaped, and
        // decoding them made a double encoding the first pass had not seen.
        assert_eq!(canonicalize("/%25%652e/x"), Err(PathError::DoubleEncoding));
        assert_eq!(
            canonicalize("/%41%25e%43%64"),
            Err(PathError::DoubleEncoding)
        );
        assert_eq!(canonicalize("/%25%65x").as_deref(), Ok("/%25ex"));
        assert_eq!(canonicalize("/a%00"), Err(PathError::ControlByte));
        assert_eq!(canonicalize("/a\\b"), Err(PathError::Backslash));
        assert_eq!(canonicalize("/a%zz"), Err(PathError::BadPercent));
        assert_eq!(canonicalize("/a%2"), Err(PathError::BadPercent));
        assert_eq!(canonicalize("/%ff%fe"), Err(PathError::InvalidUtf8));
        assert_eq!(canonicalize("x"), Err(PathError::NotAbsolute));
        assert_eq!(canonicalize("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn path_parameters_are_stripped_for_the_blocked_check() {
        assert_eq!(without_params("/v1/models"), None);
        assert_eq!(without_params("/terminal;a").as_deref(), Some("/terminal"));
        assert_eq!(
            without_params("/v1/..;/terminal").as_deref(),
            Some("/terminal")
        );
        assert_eq!(
            without_params("/ter;x/minal").as_deref(),
            Some("/ter/minal")
        );
        assert_eq!(without_params("/;/terminal").as_deref(), Some("/terminal"));
    }

    #[test]
    fn encoded_semicolons_are_parameters_too() {
        assert_eq!(
            without_params("/terminal%3Bx").as_deref(),
            Some("/terminal")
        );
        assert_eq!(
            without_params("/v1/..%3b/admin/x").as_deref(),
            Some("/admin/x")
        );
        assert_eq!(without_params("/a%3Ab"), None);
    }

    #[test]
    fn one_decision_for_every_reading_of_a_path() {
        let under = |path: &str, prefix: &str| {
            let c = canonicalize(path).unwrap();
            Readings::of(&c).under(prefix, false)
        };
        assert_eq!(under("/admin/x", "/admin/"), Under::Yes);
        assert_eq!(under("/ADMIN/x", "/admin/"), Under::Yes);
        assert_eq!(under("/admin/x;y", "/admin/"), Under::Yes);
        assert_eq!(under("/terminal/x", "/terminal"), Under::Yes);
        assert_eq!(under("/admin;x/y", "/admin/"), Under::Parameter);
        assert_eq!(under("/admin%3Bx/y", "/admin/"), Under::Parameter);
        assert_eq!(under("/terminal;a", "/terminal"), Under::Parameter);
        assert_eq!(under("/x/..;/admin/y", "/admin/"), Under::Parameter);
        assert_eq!(under("/x/..%3B/admin/y", "/admin/"), Under::Parameter);
        assert_eq!(under("/admin%20/y", "/admin/"), Under::Lookalike);
        assert_eq!(under("/admin./y", "/admin/"), Under::Lookalike);
        assert_eq!(under("/x/..%20/admin/y", "/admin/"), Under::Lookalike);
        assert_eq!(under("/admin%20;x/y", "/admin/"), Under::Lookalike);
        assert_eq!(under("/administrator/x", "/admin/"), Under::No);
        assert_eq!(under("/adminx;y/z", "/admin/"), Under::No);
        assert_eq!(under("/x/..;/public/a", "/admin/"), Under::No);
        assert_eq!(under("/admin-ui%20/x", "/admin/"), Under::No);
        assert_eq!(under("/adm%C4%B1n/x", "/admin"), Under::Lookalike);
        assert_eq!(under("/admin%EF%BC%9Bx/y", "/admin"), Under::Lookalike);
        assert_eq!(under("/x/..%EF%BC%9B/admin/y", "/admin"), Under::Lookalike);
        assert_eq!(under("/%E2%84%AAey", "/key"), Under::Lookalike);
        // Case-sensitive prefixes stay so in every reading.
        let c = canonicalize("/ADMIN;x/y").unwrap();
        assert_eq!(Readings::of(&c).under("/admin/", true), Under::No);
        assert!(Readings::of("/v1/models").is_plain());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]

        /// The canonicalizer's fuzz property: any input either is refused or yields a path that
        /// is absolute, has no empty, `.` or `..` segments, no control bytes or backslashes, no
        /// encoded separator or dot, and canonicalizes to itself.
        #[test]
        fn canonical_output_is_clean_and_stable(raw in r"(/|[a-zA-Z.%;\\]|%[0-9a-fA-F]{2}|\PC)*") {
            if let Ok(c) = canonicalize(&raw) {
                proptest::prop_assert!(c.starts_with('/'));
                proptest::prop_assert!(!c.contains("//"), "{c}");
                for seg in c.split('/').skip(1) {
                    proptest::prop_assert!(seg != "." && seg != "..", "{c}");
                }
                proptest::prop_assert!(!c.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\'));
                let upper = c.to_ascii_uppercase();
                for bad in ["%2F", "%5C", "%2E"] {
                    proptest::prop_assert!(!upper.contains(bad), "{c}");
                }
                let again = canonicalize(&c);
                proptest::prop_assert_eq!(again.as_deref().ok(), Some(&*c));
            }
        }

        /// Arbitrary bytes never panic it.
        #[test]
        fn arbitrary_input_never_panics(raw in r"\PC*") {
            let _ = canonicalize(&raw);
            let _ = without_params(&raw);
        }
    }

    #[test]
    fn lookalikes_fold_width_trailing_junk_and_extensions() {
        let l = |p: &str| lookalikes(p);
        assert_eq!(l("/terminal.json"), ["/terminal"]);
        assert_eq!(l("/terminal%20"), ["/terminal"]);
        assert_eq!(l("/terminal~"), ["/terminal"]);
        assert_eq!(l("/terminal%23"), ["/terminal"]);
        assert_eq!(l("/%EF%BD%94erminal"), ["/terminal"]);
        assert_eq!(l("/ｔｅｒｍｉｎａｌ"), ["/terminal"]);
        assert_eq!(l("/.env.local"), ["/.env"]);
        // Letters that case-map to ASCII: dotless i, long s, the Kelvin sign.
        assert_eq!(l("/adm%C4%B1n/x"), ["/admIn/x"]);
        assert_eq!(l("/\u{17F}erver-status"), ["/Server-status"]);
        assert_eq!(l("/\u{212A}ey"), ["/key"]);
        // Both the trimmed name and its stem: a blocked name may carry an extension itself.
        assert_eq!(l("/phpinfo.php%20"), ["/phpinfo.php", "/phpinfo"]);
        // A dot-file keeps its name; plain paths are left alone without work.
        assert!(l("/.env").is_empty());
        assert!(l("/v1/models").is_empty());
        assert!(l("/.gitignore").is_empty());
    }

    #[test]
    fn canonicalization_is_idempotent() {
        for p in ["//a/./b/../c/", "/%41%62", "/x/%7e/..", "/a%3bb//c"] {
            let once = ok(p);
            assert_eq!(ok(&once), once, "{p}");
        }
    }
}
