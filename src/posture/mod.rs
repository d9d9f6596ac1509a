//! The security posture checklist: one PASS / WARN / FAIL line per item with a one-line remedy.
//! `portcullis posture` prints it; `serve` in production mode runs the same checks and refuses
//! to start on any FAIL; a hot reload in production that would FAIL is refused (the policy-only
//! part, [`policy_items`]). Severity follows the mode: what production refuses is a warning in
//! development and staging, so the report says early what a promotion would meet.
//!
//! This file holds the report and the order of the checklist; the checks live by what they read:
//! `policy_checks.rs` (the compiled policy), `secrets.rs` (secrets written in the policy files),
//! `config_checks.rs` (the static configuration) and `cert_checks.rs` (certificates and OCSP).

mod cert_checks;
mod config_checks;
mod item;
mod policy_checks;
mod secrets;

use std::fmt::Write;

use crate::config::{Config, Mode};
use crate::policy::{Policy, SourceFile};
use crate::tls::store::CertSet;

use cert_checks::cert_items;
use config_checks::{
    admin_listener_item, dev_providers_item, keepalive_item, listeners_item, logging_item,
    tls_version_item, worker_token_item,
};
use item::first_line;
pub use item::{Item, OcspView, Status};
pub use policy_checks::{acme_shared_item, policy_items, rooms_side_doors};
pub use secrets::{secret_files, secret_values};

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
            let acme_shared = config.acme.as_ref().is_some_and(|a| a.shared);
            items.extend(acme_shared_item(acme_shared, p, mode));
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
