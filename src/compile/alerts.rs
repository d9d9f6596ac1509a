//! `[[alerts]]`: which security events raise an alert, over what window and threshold.

use std::sync::Arc;

use super::auth::Errs;
use crate::auth::secret;
use crate::policy::source::{PolicyError, SourceFile};

/// Compiles `[[alerts]]`.
pub(crate) fn compile_alerts(
    raw: &[(&SourceFile, usize, &crate::policy::raw::RawAlert)],
    errors: &mut Vec<PolicyError>,
) -> Vec<crate::policy::specs::AlertRule> {
    use crate::policy::specs::{AlertRule, EventKind};
    let mut out: Vec<AlertRule> = Vec::new();
    for (file, i, a) in raw {
        let mut e = Errs { file, errors };
        let at = format!("alerts[{i}]");
        let name = a.name.get_ref();
        if name.is_empty() || out.iter().any(|r| &*r.name == name) {
            e.at(
                &a.name,
                format!("{at}.name"),
                format!("empty or duplicate alert name {name:?}"),
            );
            continue;
        }
        let Some(event) = EventKind::parse(a.event.get_ref()) else {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            e.at(
                &a.event,
                format!("{at}.event"),
                format!(
                    "unknown event {:?} (one of {})",
                    a.event.get_ref(),
                    known.join(", ")
                ),
            );
            continue;
        };
        let window = match &a.window_seconds {
            Some(w) if !(1..=86_400).contains(w.get_ref()) => {
                e.at(w, format!("{at}.window_seconds"), "between 1 and 86400");
                continue;
            }
            Some(w) => *w.get_ref(),
            None => 60,
        };
        let per_ip = match a.per.as_ref().map(|p| p.get_ref().as_str()) {
            None | Some("global") => false,
            Some("ip") => true,
            Some(other) => {
                e.at(
                    a.per.as_ref().unwrap(),
                    format!("{at}.per"),
                    format!("{other:?}: \"global\" or \"ip\""),
                );
                continue;
            }
        };
        let slack = match a.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("json") => false,
            Some("slack") => true,
            Some(other) => {
                e.at(
                    a.format.as_ref().unwrap(),
                    format!("{at}.format"),
                    format!("{other:?}: \"json\" or \"slack\""),
                );
                continue;
            }
        };
        let webhook = match secret::resolve(a.webhook.get_ref(), e.base()) {
            Ok(u) if u.starts_with("http://") || u.starts_with("https://") => u,
            Ok(_) => {
                e.at(&a.webhook, format!("{at}.webhook"), "not an http(s) URL");
                continue;
            }
            Err(m) => {
                e.at(&a.webhook, format!("{at}.webhook"), m);
                continue;
            }
        };
        out.push(AlertRule {
            name: Arc::from(name.as_str()),
            event,
            threshold: *a.threshold.get_ref(),
            window: std::time::Duration::from_secs(window),
            per_ip,
            webhook,
            slack,
        });
    }
    out
}
