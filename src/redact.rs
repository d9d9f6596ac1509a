//! The last line of defence for secrets in logs: every formatted log line passes through
//! `redact` before it is written (the access line field by field, `access`). Whatever a
//! component (ours or Pingora's) put in a message, the line loses JWT-looking strings,
//! `Bearer`/`Basic` credentials, the values of `access_token`, `token`, `sig`, `signature`,
//! `password`, `secret`, `api_key`, … parameters and JSON fields, and any value registered as a
//! secret (the worker token, HMAC keys).

use std::sync::RwLock;

const MASK: &str = "[redacted]";

/// Values that must never appear in a log line, registered as they are loaded.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret value (at least 8 bytes; shorter ones would mask ordinary words).
pub fn register_secret(value: &str) {
    if value.len() < 8 {
        return;
    }
    let mut s = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !s.iter().any(|v| v == value) {
        s.push(value.to_string());
    }
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

const PARAMS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "sig",
    "signature",
    "password",
    "secret",
    "api_key",
    "apikey",
    "client_secret",
];

/// The line with every secret-looking part masked. Borrowed when nothing matched.
/// Bytes at which a pattern below can start; all others are skipped at once.
static TRIGGERS: [bool; 256] = {
    let mut t = [false; 256];
    let starts = b"eBbcCsSaApP\"?&; ";
    let mut i = 0;
    while i < starts.len() {
        t[starts[i] as usize] = true;
        i += 1;
    }
    t
};

pub fn redact(line: &str) -> std::borrow::Cow<'_, str> {
    let b = line.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    let push = |out: &mut Option<String>, copied: &mut usize, from: usize, to: usize| {
        let o = out.get_or_insert_with(|| String::with_capacity(line.len()));
        o.push_str(&line[*copied..from]);
        o.push_str(MASK);
        *copied = to;
    };
    'scan: while i < b.len() {
        // The first byte is checked whatever it is: a `name=value` can open the text (a field's
        // value redacted on its own, `access`).
        if i > 0 && !TRIGGERS[b[i] as usize] {
            i += 1;
            continue;
        }
        // JWTs: three base64url parts, the first starting "eyJ" (a JSON object).
        if b[i..].starts_with(b"eyJ") && (i == 0 || !is_b64url(b[i - 1])) {
            let mut j = i;
            let mut dots = 0;
            while j < b.len() && (is_b64url(b[j]) || (b[j] == b'.' && dots < 2)) {
                if b[j] == b'.' {
                    dots += 1;
                }
                j += 1;
            }
            if dots == 2 && j - i >= 20 {
                push(&mut out, &mut copied, i, j);
                i = j;
                continue;
            }
        }
        // Authorization schemes.
        for scheme in [&b"Bearer "[..], b"bearer ", b"Basic ", b"basic "] {
            if b[i..].starts_with(scheme) {
                let start = i + scheme.len();
                let mut j = start;
                while j < b.len()
                    && !matches!(
                        b[j],
                        b' ' | b'"' | b'\'' | b',' | b';' | b'\\' | b'\n' | b'\r'
                    )
                {
                    j += 1;
                }
                if j > start {
                    push(&mut out, &mut copied, start, j);
                    i = j;
                    continue 'scan;
                }
                break;
            }
        }
        // Credential-carrying headers, as `name: value` or `"name": "value"` (Debug dumps, also
        // inside a JSON log line where the quotes are escaped).
        for h in [
            &b"cookie"[..],
            b"set-cookie",
            b"authorization",
            b"proxy-authorization",
        ] {
            let before_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'-');
            if before_ok && b.len() > i + h.len() && b[i..i + h.len()].eq_ignore_ascii_case(h) {
                let mut j = i + h.len();
                let quote = |j: usize| -> usize {
                    if b[j..].starts_with(b"\\\"") {
                        2
                    } else if b[j..].starts_with(b"\"") {
                        1
                    } else {
                        0
                    }
                };
                j += quote(j);
                if j < b.len() && b[j] == b':' {
                    j += 1;
                    while j < b.len() && b[j] == b' ' {
                        j += 1;
                    }
                    let opener = quote(j);
                    j += opener;
                    let start = j;
                    while j < b.len() && b[j] != b'\n' {
                        match opener {
                            2 if b[j..].starts_with(b"\\\"") => break,
                            1 if b[j] == b'"' => break,
                            0 if b[j] == b',' || b[j] == b'"' => break,
                            _ => {}
                        }
                        j += if opener == 1 && b[j] == b'\\' { 2 } else { 1 };
                    }
                    let j = j.min(b.len());
                    if j > start {
                        push(&mut out, &mut copied, start, j);
                        i = j;
                        continue 'scan;
                    }
                }
                break;
            }
        }
        // "name":"value" JSON fields.
        if b[i] == b'"' {
            for p in PARAMS {
                let end = i + 1 + p.len();
                if b.len() > end + 3
                    && b[i + 1..end].eq_ignore_ascii_case(p.as_bytes())
                    && &b[end..end + 3] == b"\":\""
                {
                    let start = end + 3;
                    let mut j = start;
                    while j < b.len() && b[j] != b'"' {
                        j += if b[j] == b'\\' { 2 } else { 1 };
                    }
                    let j = j.min(b.len());
                    if j > start {
                        push(&mut out, &mut copied, start, j);
                        i = j;
                        continue 'scan;
                    }
                    break;
                }
            }
        }
        // name=value parameters (query strings, cookies, form-like text).
        let sep = matches!(b[i], b'?' | b'&' | b';' | b' ');
        if (sep && i + 1 < b.len()) || (i == 0 && !sep) {
            let rest = if sep { &line[i + 1..] } else { line };
            let rest = rest.trim_start();
            let offset = line.len() - rest.len();
            for p in PARAMS {
                if rest.len() > p.len()
                    && rest.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
                    && rest.as_bytes()[p.len()] == b'='
                {
                    let start = offset + p.len() + 1;
                    let mut j = start;
                    while j < b.len()
                        && !matches!(
                            b[j],
                            b'&' | b' ' | b'"' | b'\'' | b';' | b',' | b'\\' | b'#' | b'\n' | b'\r'
                        )
                    {
                        j += 1;
                    }
                    if j > start {
                        push(&mut out, &mut copied, start, j);
                        i = j;
                        continue 'scan;
                    }
                    break;
                }
            }
        }
        i += 1;
    }
    let mut result = match out {
        Some(mut o) => {
            o.push_str(&line[copied.min(line.len())..]);
            std::borrow::Cow::Owned(o)
        }
        None => std::borrow::Cow::Borrowed(line),
    };
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    for s in secrets.iter() {
        if result.contains(s.as_str()) {
            result = std::borrow::Cow::Owned(result.replace(s.as_str(), MASK));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLWJ5dGVz";

    #[test]
    fn secrets_are_masked_wherever_they_stand() {
        let cases = [
            (format!("token {JWT} here"), JWT),
            (format!(r#"{{"error":"bad","t":"{JWT}"}}"#), JWT),
            (
                "Authorization: Bearer abc.def-123".to_string(),
                "abc.def-123",
            ),
            ("GET /x?access_token=s3cr3t&x=1".to_string(), "s3cr3t"),
            ("GET /x?a=1&sig=AbCd_Ef".to_string(), "AbCd_Ef"),
            ("GET /x?access_token=one-1&sig=two-2".to_string(), "two-2"),
            (
                "cookie: session=1; token=tok-value".to_string(),
                "tok-value",
            ),
            ("auth Basic dXNlcjpwYXNz".to_string(), "dXNlcjpwYXNz"),
            (
                r#"{"password":"hunter2-long","x":1}"#.to_string(),
                "hunter2-long",
            ),
            (
                r#"headers: {"cookie": "session=opaque-sess-1", "x": "y"}"#.to_string(),
                "opaque-sess-1",
            ),
            ("Cookie: a=opaque-sess-2".to_string(), "opaque-sess-2"),
            (
                r#"{"message":"headers: {"cookie": "other=opaque-3", "x": "y"}"}"#.to_string(),
                "opaque-3",
            ),
        ];
        for (line, secret) in cases {
            let r = redact(&line);
            assert!(!r.contains(secret), "{line} -> {r}");
            assert!(r.contains(MASK), "{r}");
        }
        assert_eq!(redact("GET /v1/models 200"), "GET /v1/models 200");
        assert_eq!(redact("monkey=1&keys=2"), "monkey=1&keys=2");
    }

    #[test]
    fn a_parameter_opening_the_text_and_a_credential_ending_a_line_are_masked_alone() {
        // A field's value redacted on its own loses what it would lose inside its line.
        assert_eq!(redact("password=hunter22"), "password=[redacted]");
        assert_eq!(redact("Token=abc&x=1"), "Token=[redacted]&x=1");
        assert_eq!(redact("tokens=1"), "tokens=1");
        // The mask ends at the line's end: the next line is not swallowed with the secret.
        assert_eq!(
            redact("a Bearer abc.def\nnext line\n"),
            "a Bearer [redacted]\nnext line\n"
        );
        assert_eq!(
            redact("GET /x?token=abc\r\nnext line"),
            "GET /x?token=[redacted]\r\nnext line"
        );
    }

    #[test]
    fn registered_secrets_are_masked() {
        register_secret("worker-token-value-123456");
        let r = redact("configured worker-token-value-123456 in a message");
        assert!(!r.contains("worker-token-value-123456"));
        register_secret("short");
        assert_eq!(redact("a short word"), "a short word");
    }
}
