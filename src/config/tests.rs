//! Unit tests of the static configuration: defaults, overrides, `[tls.acme]`, connection bounds.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn acme_settings_are_resolved_and_judged() {
    let ok = "[tls.acme]\naccept_terms = true\nnames = [\"api.example.com\"]\ncontact = [\"ops@example.com\"]\n";
    let c = Config::from_str_with_env(ok, None, Path::new("/srv"), &no_env).unwrap();
    let a = c.acme.unwrap();
    assert_eq!(a.directory, LETS_ENCRYPT);
    assert_eq!(a.challenge, AcmeChallenge::Http01);
    assert_eq!(a.storage, PathBuf::from("/srv/data/acme"));
    assert_eq!(a.contact, vec!["mailto:ops@example.com".to_string()]);
    assert_eq!(a.renew_before, None);
    let bad = [
        (
            "accept_terms = false\nnames = [\"a.example\"]",
            "accept_terms",
        ),
        ("accept_terms = true\nnames = []", "at least one host name"),
        (
            "accept_terms = true\nnames = [\"*.example.com\"]",
            "a wildcard name needs challenge = \"dns-01\"",
        ),
        (
            "accept_terms = true\nnames = [\"10.0.0.1\"]",
            "no IP addresses",
        ),
        (
            "accept_terms = true\nnames = [\"Upper.example\"]",
            "lower-case",
        ),
        (
            "accept_terms = true\nnames = [\"a.example\"]\nchallenge = \"dns-01\"",
            "dns-01 needs a [tls.acme.dns] section",
        ),
        (
            "accept_terms = true\nnames = [\"a.example\"]\nchallenge = \"dns-02\"",
            "expected \"http-01\", \"tls-alpn-01\" or \"dns-01\"",
        ),
        (
            "accept_terms = true\nnames = [\"*.a.example\"]\nchallenge = \"dns-01\"\n[tls.acme.dns]\nserver = \"127.0.0.1\"\nzone = \"b.example\"\ntsig_key = \"k\"\ntsig_secret = \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\"",
            "is not in the zone \"b.example\"",
        ),
        (
            "accept_terms = true\nnames = [\"*.a.example\"]\nchallenge = \"dns-01\"\n[tls.acme.dns]\nserver = \"127.0.0.1\"\nzone = \"a.example\"\ntsig_key = \"k\"\ntsig_secret = \"c2hvcnQ=\"",
            "tsig_secret: shorter than 16 bytes",
        ),
        (
            "accept_terms = true\nnames = [\"*.a.example\"]\nchallenge = \"dns-01\"\n[tls.acme.dns]\nserver = \"127.0.0.1\"\nzone = \"a.example\"\ntsig_key = \"k\"\ntsig_algorithm = \"hmac-md5\"\ntsig_secret = \"c2VjcmV0LXNlY3JldC1zZWNyZXQ=\"",
            "tsig_algorithm: \"hmac-md5\"",
        ),
        (
            "accept_terms = true\nnames = [\"a.example\"]\n[tls.acme.dns]\nserver = \"127.0.0.1\"",
            "tls.acme.dns: only with challenge = \"dns-01\"",
        ),
        (
            "accept_terms = true\nnames = [\"a.example\"]\nchallenge = \"tls-alpn-01\"\nshared = true",
            "tls.acme.shared: use http-01 or dns-01",
        ),
        (
            "accept_terms = true\nnames = [\"a.example\"]\ndirectory = \"http://x/dir\"",
            "https://",
        ),
        (
            "accept_terms = true\nnames = [\"a.example\"]\ncontact = [\"nobody\"]",
            "e-mail",
        ),
        (
            "accept_terms = true\nnames = [\"a.example\"]\nrenew_every = 1",
            "unknown field",
        ),
    ];
    for (body, want) in bad {
        let text = format!("[tls.acme]\n{body}\n");
        let e = Config::from_str_with_env(&text, None, Path::new("."), &no_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{body}: {e}");
    }
    // http-01 needs the plain-HTTP listener.
    let off = |k: &str| (k == "PORTCULLIS_HTTP_ADDR").then(|| "off".to_string());
    let e = Config::from_str_with_env(ok, None, Path::new("."), &off).unwrap_err();
    assert!(e.to_string().contains("plain-HTTP listener"), "{e}");
}

#[test]
fn defaults_follow_the_interface_conventions() {
    let c = Config::from_str_with_env("", None, Path::new("/srv"), &no_env).unwrap();
    assert_eq!(c.https_addr.to_string(), DEFAULT_HTTPS);
    assert_eq!(c.http_addr.unwrap().to_string(), DEFAULT_HTTP);
    assert_eq!(c.admin_addr.to_string(), DEFAULT_ADMIN);
    assert_eq!(c.mode, Mode::Development);
    assert_eq!(c.cert_dir, PathBuf::from("/srv/certs"));
    assert_eq!(c.grace_seconds, 20);
}

#[test]
fn environment_overrides_the_file() {
    let env = |k: &str| match k {
        "PORTCULLIS_HTTPS_ADDR" => Some("127.0.0.1:9443".to_string()),
        "ENV" => Some("production".to_string()),
        "PORTCULLIS_HTTP_ADDR" => Some("off".to_string()),
        _ => None,
    };
    let c = Config::from_str_with_env(
        "mode = \"staging\"\n[listeners]\nhttps = \"127.0.0.1:1\"\n",
        None,
        Path::new("."),
        &env,
    )
    .unwrap();
    assert_eq!(c.https_addr.port(), 9443);
    assert_eq!(c.mode, Mode::Production);
    assert!(c.http_addr.is_none());
}

#[test]
fn connection_bounds_default_to_nginx_like_values_and_zero_turns_one_off() {
    let c = Config::from_str_with_env("", None, Path::new("."), &no_env).unwrap();
    assert_eq!(c.connections, ConnectionBounds::default());
    assert_eq!(
        c.connections.keepalive_timeout,
        Some(std::time::Duration::from_secs(75))
    );
    let env = |k: &str| (k == "PORTCULLIS_BODY_TIMEOUT_SECONDS").then(|| "5".to_string());
    let c = Config::from_str_with_env(
        "[network]\nkeepalive_timeout_seconds = 0\nbody_timeout_seconds = 30\nmax_requests_per_connection = 0\n",
        None,
        Path::new("."),
        &env,
    )
    .unwrap();
    assert_eq!(c.connections.keepalive_timeout, None);
    assert_eq!(
        c.connections.body_timeout,
        Some(std::time::Duration::from_secs(5))
    );
    assert_eq!(c.connections.max_requests, None);
    let e = Config::from_str_with_env(
        "[network]\nkeepalive_timeout_seconds = 100000\n",
        None,
        Path::new("."),
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("network.keepalive_timeout_seconds"), "{e}");
    let bad = |k: &str| (k == "PORTCULLIS_MAX_REQUESTS_PER_CONNECTION").then(|| "x".into());
    let e = Config::from_str_with_env("", None, Path::new("."), &bad).unwrap_err();
    assert!(
        e.to_string()
            .contains("PORTCULLIS_MAX_REQUESTS_PER_CONNECTION"),
        "{e}"
    );
}

#[test]
fn unknown_keys_and_bad_addresses_are_reported_with_lines() {
    let e = Config::from_str_with_env(
        "\n[listeners]\nhtps = \"x\"\n",
        None,
        Path::new("."),
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("<defaults>:3:"), "{e}");
    let e = Config::from_str_with_env(
        "[listeners]\nhttps = \"nope\"\n",
        None,
        Path::new("."),
        &no_env,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("listeners.https"), "{e}");
}
