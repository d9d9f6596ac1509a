//! The admin status page: one self-contained HTML document (no script, no external asset; the
//! one inline style carries a per-response nonce under a strict CSP), rendered on the server,
//! with the authentication-failure trend of the last hour drawn as inline SVG.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::handles::Shared;

/// Escapes text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn date(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// The trend as an SVG bar chart (60 bars, oldest left).
fn chart(values: &[u64]) -> String {
    let (w, h, pad) = (720.0, 180.0, 28.0);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let bw = (w - 2.0 * pad) / values.len().max(1) as f64;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="authentication failures per minute, last hour">"#
    );
    let _ = write!(
        s,
        r##"<line x1="{pad}" y1="{y}" x2="{x2}" y2="{y}" stroke="#888"/>"##,
        y = h - pad,
        x2 = w - pad
    );
    for (i, v) in values.iter().enumerate() {
        let bh = (*v as f64 / max) * (h - 2.0 * pad);
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="#c0392b"><title>{v}</title></rect>"##,
            x = pad + i as f64 * bw + 1.0,
            y = h - pad - bh,
            bw = (bw - 2.0).max(1.0),
        );
    }
    let _ = write!(
        s,
        r##"<text x="{pad}" y="{ty}" font-size="11" fill="#555">-60 min</text><text x="{nx}" y="{ty}" font-size="11" fill="#555">now</text><text x="2" y="{my}" font-size="11" fill="#555">{max}</text>"##,
        ty = h - 8.0,
        nx = w - pad - 20.0,
        my = pad - 6.0,
        max = max as u64
    );
    s.push_str("</svg>");
    s
}

/// The page and the nonce its style carries.
pub fn render(shared: &Shared) -> (String, String) {
    let nonce = crate::http::headers::new_nonce();
    let policy = shared.policy.snapshot();
    let now = crate::auth::now_unix() as i64;
    let mut b = String::with_capacity(16 * 1024);
    let _ = write!(
        b,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="15"><title>Portcullis status</title><style nonce="{nonce}">
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:980px}}
h1{{font-size:20px;margin:0 0 4px}}h2{{font-size:15px;margin:22px 0 6px;border-bottom:1px solid #ddd}}
table{{border-collapse:collapse;width:100%}}td,th{{text-align:left;padding:3px 8px;border-bottom:1px solid #eee}}
.ok{{color:#1e8449}}.bad{{color:#c0392b;font-weight:600}}.muted{{color:#777}}.big{{font-size:22px;font-weight:600}}
</style></head><body>"#
    );
    let ready = shared.ready.load(Ordering::Acquire);
    let _ = write!(
        b,
        r#"<h1>Portcullis</h1><div class="muted">mode {} · {} · generated {}</div>"#,
        esc(shared.config.mode.as_str()),
        if ready {
            r#"<span class="ok">ready</span>"#
        } else {
            r#"<span class="bad">not ready</span>"#
        },
        esc(&date(now))
    );

    // Policy
    let _ = write!(
        b,
        "<h2>Policy</h2><p>generation <b>{}</b> · {} routes · last reload: {}</p>",
        policy.generation,
        policy.routes.len(),
        match shared.policy.last_error() {
            Some(e) => format!(
                r#"<span class="bad">refused</span> <code>{}</code>"#,
                esc(&e)
            ),
            None => r#"<span class="ok">ok</span>"#.to_string(),
        }
    );

    // Authentication failures
    let (trend, top) = match crate::observability::alerts::hub() {
        Some(h) => (h.auth_trend(), h.top_ips(10)),
        None => (vec![0; 60], Vec::new()),
    };
    let total: u64 = trend.iter().sum();
    let _ = write!(
        b,
        r#"<h2>Authentication failures, last hour</h2><p><span class="big">{total}</span> <span class="muted">per minute below</span></p>{}"#,
        chart(&trend)
    );
    b.push_str("<h2>Top offending client IPs, last hour</h2>");
    if top.is_empty() {
        b.push_str(r#"<p class="muted">none</p>"#);
    } else {
        b.push_str("<table><tr><th>client</th><th>authentication failures</th></tr>");
        for (ip, n) in top {
            let _ = write!(b, "<tr><td>{}</td><td>{n}</td></tr>", esc(&ip.to_string()));
        }
        b.push_str("</table>");
    }

    // WebSocket sessions and circuits
    let _ = write!(
        b,
        r#"<h2>WebSocket sessions</h2><p><span class="big">{}</span> open</p>"#,
        shared.metrics.detail.ws_open()
    );
    b.push_str("<h2>Upstream circuits</h2>");
    let circuits = shared.resilience.open_circuits();
    if circuits.is_empty() {
        b.push_str(r#"<p class="muted">no external upstream addresses in use</p>"#);
    } else {
        b.push_str("<table><tr><th>upstream</th><th>address</th><th>circuit</th></tr>");
        for (u, a, open) in circuits {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&u),
                esc(&a),
                if open {
                    r#"<span class="bad">open</span>"#
                } else {
                    r#"<span class="ok">closed</span>"#
                }
            );
        }
        b.push_str("</table>");
    }

    // Certificates
    b.push_str("<h2>Certificates</h2><table><tr><th>name</th><th>names</th><th>expires</th><th>OCSP staple</th></tr>");
    let staples = shared.stapler.info();
    for e in &shared.certs.snapshot().entries {
        let days = (e.not_after - now).div_euclid(86_400);
        let warn = days < shared.config.cert_expiry_warn_days as i64;
        let staple = staples.iter().find(|s| s.name == e.name);
        let staple = match staple {
            Some(s) if s.stapled => format!(
                r#"<span class="ok">stapled</span>{}"#,
                s.next_update
                    .map(|n| format!(" <span class=\"muted\">until {}</span>", esc(&date(n))))
                    .unwrap_or_default()
            ),
            Some(s) => match &s.last_error {
                Some(err) => format!(r#"<span class="bad">none</span> <code>{}</code>"#, esc(err)),
                None => r#"<span class="muted">none</span>"#.to_string(),
            },
            None => r#"<span class="muted">none</span>"#.to_string(),
        };
        let _ = write!(
            b,
            r#"<tr><td>{}</td><td>{}</td><td class="{}">{} ({} days)</td><td>{}</td></tr>"#,
            esc(&e.name),
            esc(&e.names.join(", ")),
            if warn { "bad" } else { "ok" },
            esc(&date(e.not_after)),
            days,
            staple
        );
    }
    b.push_str("</table>");

    // Security events
    if let Some(h) = crate::observability::alerts::hub() {
        b.push_str("<h2>Security events since start</h2><table>");
        for (k, n) in h.counts() {
            let _ = write!(b, "<tr><td>{}</td><td>{n}</td></tr>", esc(k));
        }
        let _ = write!(
            b,
            "<tr><td>alerts sent / failed</td><td>{} / {}</td></tr></table>",
            h.alerts_sent.load(Ordering::Relaxed),
            h.alerts_failed.load(Ordering::Relaxed)
        );
    }
    b.push_str("</body></html>");
    (b, nonce)
}

/// The page's Content-Security-Policy: nothing but its own nonce'd style.
pub fn csp(nonce: &str) -> String {
    format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_the_chart_scales() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let c = chart(&[0, 5, 10]);
        assert_eq!(c.matches("<rect").count(), 3);
        assert!(c.contains(">10</text>"));
    }
}
