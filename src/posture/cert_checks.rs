//! The checks on the served certificates: expiry, the development CA, and OCSP staples.

use super::item::{first_line, prod_fail, Item, OcspView, Status};
use crate::config::{Config, Mode};
use crate::tls::store::CertSet;

const DEV_CA: &str = "Portcullis Development CA";

fn issuer_cn(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.issuer().iter_common_name().next()?.as_str().ok()?;
    Some(cn.to_string())
}

pub(super) fn cert_items(
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
