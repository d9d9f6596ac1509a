use std::path::PathBuf;

use super::compile;
use crate::config::Mode;
use crate::policy::source::{field_path_at, SourceFile, EMBEDDED_DEFAULT};

fn files(list: &[(&str, &str)]) -> Vec<SourceFile> {
    list.iter()
        .map(|(p, t)| SourceFile {
            path: PathBuf::from(p),
            text: t.to_string(),
        })
        .collect()
}

#[test]
fn the_embedded_default_compiles_and_blocks_terminal() {
    let p = compile(
        &files(&[("default.toml", EMBEDDED_DEFAULT)]),
        Mode::Development,
    )
    .unwrap();
    assert!(p.blocked.find("/terminal").is_some());
    assert!(p.blocked.find("/terminal/x").is_some());
    assert!(p.blocked.find("/TERMINAL").is_some());
    assert!(p.blocked.find("/terminals").is_none());
    assert!(p.blocked.find("/.git/config").is_some());
    assert_eq!(
        p.route_for("localhost", "/v1/models").map(|r| &*r.name),
        Some("models")
    );
    assert!(
        p.route_for("localhost", "/v1").is_none(),
        "prefix /v1/ needs the slash"
    );
}

#[test]
fn specific_routes_win_over_general_ones() {
    let text = r#"
[[upstreams]]
name = "w"
kind = "worker"

[[routes]]
name = "all"
path_prefix = "/"
upstream = "w"
public = true

[[routes]]
name = "api"
path_prefix = "/api"
upstream = "w"
public = true

[[routes]]
name = "tenant"
hosts = ["*.tenants.example"]
path_prefix = "/"
upstream = "w"
public = true
"#;
    let p = compile(&files(&[("p.toml", text)]), Mode::Production).unwrap();
    let name = |h: &str, path: &str| p.route_for(h, path).map(|r| r.name.to_string());
    assert_eq!(name("x.example", "/api/v2").as_deref(), Some("api"));
    assert_eq!(name("x.example", "/apix").as_deref(), Some("all"));
    assert_eq!(name("a.tenants.example", "/api").as_deref(), Some("tenant"));
    assert_eq!(name("A.Tenants.Example", "/").as_deref(), Some("tenant"));
    assert_eq!(name("tenants.example", "/").as_deref(), Some("all"));
}

#[test]
fn a_policy_may_be_split_across_files() {
    let a = "[[upstreams]]\nname = \"w\"\nkind = \"worker\"\n";
    let b = "[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"w\"\n";
    let p = compile(&files(&[("a.toml", a), ("b.toml", b)]), Mode::Development).unwrap();
    assert_eq!(p.routes.len(), 1);
    assert_eq!(p.sources.len(), 2);
}

#[test]
fn field_paths_name_nested_keys() {
    let text = "[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nbogus = 1\n";
    let offset = text.find("bogus").unwrap();
    assert_eq!(
        field_path_at(text, offset).as_deref(),
        Some("routes[1].bogus")
    );
    let text = "[rooms]\nmax_peers = \"x\"\n";
    let offset = text.find("\"x\"").unwrap();
    assert_eq!(
        field_path_at(text, offset).as_deref(),
        Some("rooms.max_peers")
    );
}

#[test]
fn hsts_is_rendered_once_at_compile_time() {
    let text = "[hsts]\nmax_age = 63072000\npreload = true\n";
    let p = compile(&files(&[("h.toml", text)]), Mode::Development).unwrap();
    assert_eq!(
        p.hsts.unwrap(),
        "max-age=63072000; includeSubDomains; preload"
    );
    let p = compile(
        &files(&[("h.toml", "[hsts]\nenabled = false\n")]),
        Mode::Development,
    )
    .unwrap();
    assert!(p.hsts.is_none());
}

#[test]
fn capability_names_that_could_split_upstream_are_refused() {
    for bad in ["read,policy.admin", "read policy.admin", "a;b", ""] {
        let text = format!("[auth]\ncapabilities = [{bad:?}]\n");
        let errors = compile(&files(&[("p.toml", &text)]), Mode::Development)
            .err()
            .unwrap_or_else(|| panic!("{bad:?} was accepted"));
        let rendered = errors.to_string();
        assert!(
            rendered.contains("invalid capability name"),
            "{bad:?}: {rendered}"
        );
    }
    // Every name the policy accepts is safe in a token too.
    for good in ["query.read", "policy.admin", "a-b_c.9"] {
        assert!(super::auth::valid_capability(good));
        assert!(crate::auth::safe_capability_name(good));
    }
    // And a token's name the policy would refuse is never used (nor forwarded).
    for bad in ["Policy.Admin", "urn:team:ops", "read,policy.admin", "a b"] {
        assert!(!crate::auth::safe_capability_name(bad), "{bad:?}");
    }
}

#[test]
fn the_metrics_token_is_a_long_secret_by_reference() {
    let with = |value: &str| format!("[admin]\nmetrics_token = {value:?}\n");
    let errors = |text: &str, mode: Mode| match compile(&files(&[("p.toml", text)]), mode) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    let long = "a-metrics-token-of-enough-length-0123456789";
    // A clear-text token only in development.
    assert!(errors(&with(long), Mode::Development).is_empty());
    assert!(errors(&with(long), Mode::Production)
        .contains("admin.metrics_token: a clear-text secret in a policy file"));
    assert!(errors(&with("too-short-0123"), Mode::Development)
        .contains("metrics token is 14 bytes; at least 32"));
    assert!(errors(
        &with("with a space 0123456789abcdefghijklmnop"),
        Mode::Development
    )
    .contains("one printable word"));
    assert!(errors(
        &with("env:PORTCULLIS_TEST_UNSET_METRICS_TOKEN"),
        Mode::Development
    )
    .contains("PORTCULLIS_TEST_UNSET_METRICS_TOKEN is not set"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics-token");
    std::fs::write(&file, format!("{long}\n")).unwrap();
    let p = compile(
        &files(&[("p.toml", &with(&format!("file:{}", file.display())))]),
        Mode::Development,
    )
    .unwrap();
    let t = p.admin.metrics_token.as_ref().unwrap();
    assert!(t.matches(long));
    assert!(!t.matches("a-metrics-token-of-enough-length-012345678"));
}

/// In production a reload is refused when the policy would send shared ACME state (private
/// keys) to a store off this host in clear; the same policy passes when ACME state is local.
#[test]
fn a_reload_that_would_send_acme_keys_in_clear_is_refused() {
    let f = files(&[(
        "p.toml",
        "[shared_state]\nurl = \"redis://10.0.0.5:6379\"\n\n[hsts]\nmax_age = 31536000\n",
    )]);
    let p = compile(&f, Mode::Production).unwrap();
    let dir = std::path::Path::new("/p");
    let errs = super::posture_gate(&p, &f, dir, true)
        .unwrap_err()
        .to_string();
    assert!(
        errs.contains("posture acme-shared") && errs.contains("private keys"),
        "{errs}"
    );
    let local = super::posture_gate(&p, &f, dir, false);
    assert!(
        local
            .as_ref()
            .err()
            .is_none_or(|e| !e.to_string().contains("acme-shared")),
        "{local:?}"
    );
}
