//! The admin status page: self-contained HTML under a strict CSP (its one style carries the
//! response's nonce, no script), showing the authentication-failure trend, the top offending
//! client IPs and the certificates; and the admin listener guarded by the worker token when it
//! is not on loopback.

mod common;

use common::*;
use std::time::Duration;

const TOKEN: &str = "status-page-worker-token-0123456789";

fn policy() -> String {
    DEFAULT_POLICY.edit(
        "default_provider = \"local\"",
        "default_provider = \"static\"",
    ) + "\n[network]\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_failures_by_minute_and_client_under_a_strict_csp() {
    let g = Gateway::start(Options {
        env: vec![("PORTCULLIS_WORKER_TOKEN".into(), TOKEN.into())],
        ..Options::with_policy(policy())
    })
    .await;
    let c = g.client(true);
    for (ip, n) in [("203.0.113.7", 5), ("198.51.100.9", 2)] {
        for _ in 0..n {
            let r = c
                .get(g.url("/whoami"))
                .bearer_auth("not-the-token-0123456789")
                .header("x-forwarded-for", ip)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
        }
    }
    // A failure reaches the trend when its request is logged, just after the 401 has gone.
    let ((csp, html), _) = eventually(Duration::from_secs(3), "7 failures shown", || async {
        let r = reqwest::get(format!("http://{}/status.html", g.admin))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        let html = r.text().await.unwrap();
        html.contains("<span class=\"big\">7</span>")
            .then_some((csp, html))
    })
    .await;
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(
        html.contains(&format!("<style nonce=\"{nonce}\">")),
        "{html}"
    );
    assert!(!html.contains("<script"), "no script on the page");
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "no external asset"
    );
    assert!(html.contains("<span class=\"big\">7</span>"), "{html}");
    let first = html.find("203.0.113.7").expect("top IP listed");
    let second = html.find("198.51.100.9").expect("second IP listed");
    assert!(first < second, "ordered by failures");
    assert!(html.contains("<td>5</td>"), "{html}");
    assert_eq!(html.matches("<rect").count(), 60);
    assert!(html.contains("localhost"), "the certificate is listed");
    // Another response, another nonce.
    let r2 = reqwest::get(format!("http://{}/status.html", g.admin))
        .await
        .unwrap();
    assert_ne!(
        r2.headers()["content-security-policy"].to_str().unwrap(),
        csp
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exposed_admin_listener_needs_the_worker_token() {
    let port = free_port();
    let g = Gateway::start(Options {
        env: vec![
            ("PORTCULLIS_WORKER_TOKEN".into(), TOKEN.into()),
            ("PORTCULLIS_ADMIN_ADDR".into(), format!("0.0.0.0:{port}")),
        ],
        ..Options::default()
    })
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    assert_eq!(
        c.get(format!("{base}/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for path in ["/metrics", "/status", "/status.html"] {
        let r = c.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(format!("{base}{path}"))
            .bearer_auth("wrong-token-0123456789abcdef")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    drop(g);
}
