//! `portcullis check`: every error of a broken policy, as `file:line: field.path: message`,
//! compared with golden files (`BLESS=1 cargo test --test check` rewrites them after review).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::golden;
use portcullis::compile::compile;
use portcullis::config::Mode;
use portcullis::policy::SourceFile;

#[test]
fn every_bad_policy_reports_its_errors() {
    let dir = Path::new("tests/fixtures/policy/bad");
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 5);
    for path in fixtures {
        let text = std::fs::read_to_string(&path).unwrap();
        let mode = if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("prod-")
        {
            Mode::Production
        } else {
            Mode::Development
        };
        let errors = compile(
            &[SourceFile {
                path: path.clone(),
                text,
            }],
            mode,
        )
        .expect_err("fixture must fail");
        let rendered = format!("{errors}\n");
        golden(&path.with_extension("errors"), &rendered);
    }
}

#[test]
fn check_command_lists_every_error_across_files_and_fails() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", "/dev/null"])
        .env("PORTCULLIS_POLICY_DIR", "tests/fixtures/policy/bad-folder")
        .env("PORTCULLIS_CERT_DIR", "tests/fixtures/no-such-folder")
        .env_remove("PORTCULLIS_MODE")
        .env_remove("ENV")
        .output()
        .unwrap();
    assert!(!out.status.success());
    golden(
        Path::new("tests/fixtures/policy/bad-folder.stderr"),
        &String::from_utf8(out.stderr).unwrap(),
    );
}

#[test]
fn check_command_summarises_a_good_policy() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", "/dev/null"])
        .env("PORTCULLIS_POLICY_DIR", "policies")
        .env("PORTCULLIS_CERT_DIR", "tests/fixtures/no-such-folder")
        .env_remove("PORTCULLIS_MODE")
        .env_remove("ENV")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("(4 routes, 2 upstreams)"), "{stdout}");
    assert!(stdout.contains("rooms(rooms) auth:room +ws"), "{stdout}");
    assert!(stdout.contains("blocked: /terminal, "), "{stdout}");
    assert!(stdout.ends_with("ok\n"), "{stdout}");
}

#[test]
fn production_refuses_what_development_allows() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "--config", "/dev/null"])
        .env("PORTCULLIS_POLICY_DIR", "policies")
        .env("PORTCULLIS_CERT_DIR", "tests/fixtures/no-such-folder")
        .env("PORTCULLIS_MODE", "production")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("policies/default.toml:10: auth.default_provider: authentication provider \"local\" is allowed only in development mode"), "{stderr}");
    assert!(
        stderr.contains("tests/fixtures/no-such-folder: cannot read the certificate folder"),
        "{stderr}"
    );
}

/// The examples' URL-signing key comes from the environment, as it would in production.
const URL_KEY: &str = "example-url-signing-key-of-at-least-32-bytes";

#[test]
fn every_example_checks_clean_and_compiles_for_production() {
    // Read by the in-process compile below; the same value for every test in this binary.
    std::env::set_var("PORTCULLIS_URL_KEY", URL_KEY);
    let mut count = 0;
    for entry in std::fs::read_dir("examples").unwrap() {
        let dir = entry.unwrap().path();
        let config = dir.join("portcullis.toml");
        if !config.is_file() {
            continue;
        }
        count += 1;
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("check")
            .arg("--config")
            .arg(&config)
            .env_remove("PORTCULLIS_MODE")
            .env_remove("ENV")
            .env_remove("PORTCULLIS_POLICY_DIR")
            .env_remove("PORTCULLIS_CERT_DIR")
            .env("PORTCULLIS_URL_KEY", URL_KEY)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let files = portcullis::policy::read_dir(&dir.join("policies"), false).unwrap();
        compile(&files, Mode::Production).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    assert!(count >= 2);
}

#[test]
fn debug_logging_is_refused_in_production() {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .env("PORTCULLIS_MODE", "production")
        .env("PORTCULLIS_LOG_LEVEL", "portcullis=debug")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FAIL logging: log level \"portcullis=debug\" writes request details"),
        "{stderr}"
    );
}

/// With `[tls.acme]`, an empty or absent certificate folder is what ACME fills: neither `check`
/// nor `posture` counts it against production, and `acme status` lists the names.
#[test]
fn acme_names_stand_in_for_an_empty_certificate_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("policies/default.toml"),
        include_str!("../policies/default.toml"),
    )
    .unwrap();
    let config = dir.path().join("portcullis.toml");
    let base = "mode = \"production\"\n[tls]\ncert_dir = \"certs\"\n";
    let acme = "[tls.acme]\naccept_terms = true\nnames = [\"api.example.com\"]\n";
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env_remove("PORTCULLIS_MODE")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    std::fs::write(&config, base).unwrap();
    assert!(
        run(&["check"]).contains("certs"),
        "without ACME the folder is an error"
    );
    assert!(run(&["posture"]).contains("FAIL  certificates"));
    std::fs::write(&config, format!("{base}{acme}")).unwrap();
    let check = run(&["check"]);
    assert!(check.contains("obtained over ACME"), "{check}");
    let posture = run(&["posture"]);
    assert!(
        posture.contains("PASS  certificates      none in the folder: obtained over ACME"),
        "{posture}"
    );
    let status = run(&["acme", "status"]);
    assert!(
        status.contains("api.example.com") && status.contains("none stored"),
        "{status}"
    );
}
