//! Worker-token rotation without a restart: the token's file is re-read while the gateway runs;
//! a new token is taken at once, the previous one for `[auth] previous_token_grace_seconds`, and
//! both are logged only masked, as is the overlap's end. Tokens from a file that holds the token
//! alone (`PORTCULLIS_WORKER_TOKEN_FILE`, a mounted Secret: links followed) rotate the same way.

mod common;

use std::path::Path;
use std::time::Duration;

use common::upstream::TestUpstream;
use common::*;

const OLD: &str = "old-worker-token-0123456789abcdef";
const NEW: &str = "new-worker-token-0123456789abcdef";

fn policy(upstream: u16, grace: u64) -> String {
    format!(
        r#"
[auth]
default_provider = "static"
previous_token_grace_seconds = {grace}

[[upstreams]]
name = "api"
kind = "external"
addresses = ["127.0.0.1:{upstream}"]

[[routes]]
name = "api"
path_prefix = "/api/"
upstream = "api"
"#
    )
}

/// Replaces `path` whole (a new file renamed over it), mode 0600.
fn replace(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn status(g: &Gateway, token: &str) -> u16 {
    g.client(true)
        .get(g.url("/api/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_taken_at_once_and_the_old_token_for_its_overlap() {
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("deployment.yaml");
    replace(&file, &format!("worker_auth_token: \"{OLD}\"\n"));
    let up = TestUpstream::start(0).await;
    let g = Gateway::start(Options {
        env: vec![("PORTCULLIS_TOKEN_FILE".into(), file.display().to_string())],
        ..Options::with_policy(policy(up.port, 4))
    })
    .await;
    assert_eq!(status(&g, OLD).await, 200);
    assert_eq!(status(&g, NEW).await, 401);

    replace(&file, &format!("worker_auth_token: \"{NEW}\"\n"));
    eventually(Duration::from_secs(5), "the new token taken", || async {
        (status(&g, NEW).await == 200).then_some(())
    })
    .await;
    // Within the overlap (4 s from the rotation, which is at most a second old here).
    assert_eq!(
        status(&g, OLD).await,
        200,
        "the previous token, in its overlap"
    );
    let (_, took) = eventually(Duration::from_secs(10), "the overlap's end", || async {
        (status(&g, OLD).await == 401).then_some(())
    })
    .await;
    assert!(took >= Duration::from_secs(1), "ended too soon: {took:?}");
    assert_eq!(status(&g, NEW).await, 200);

    // The overlap's end is logged at the next upkeep tick.
    eventually(
        Duration::from_secs(3),
        "the overlap's end logged",
        || async { g.log().contains("worker token overlap ended").then_some(()) },
    )
    .await;
    let log = g.log();
    assert!(log.contains("worker token rotated"), "{log}");
    assert!(
        log.contains("new-…cdef") && log.contains("old-…cdef"),
        "masked: {log}"
    );
    assert!(
        !log.contains(OLD) && !log.contains(NEW),
        "a token in the log: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_secret_rotates_through_its_link_and_a_broken_one_keeps_the_token() {
    // A Secret volume: the file is a link into a folder the kubelet swaps.
    let secrets = tempfile::tempdir().unwrap();
    let v1 = secrets.path().join("v1");
    let v2 = secrets.path().join("v2");
    std::fs::create_dir(&v1).unwrap();
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v1.join("worker-token"), format!("{OLD}\n")).unwrap();
    std::fs::write(v2.join("worker-token"), format!("{NEW}\n")).unwrap();
    let data = secrets.path().join("..data");
    std::os::unix::fs::symlink(&v1, &data).unwrap();
    let token = secrets.path().join("worker-token");
    std::os::unix::fs::symlink(data.join("worker-token"), &token).unwrap();

    let up = TestUpstream::start(0).await;
    let g = Gateway::start(Options {
        env: vec![(
            "PORTCULLIS_WORKER_TOKEN_FILE".into(),
            token.display().to_string(),
        )],
        ..Options::with_policy(policy(up.port, 0))
    })
    .await;
    assert_eq!(status(&g, OLD).await, 200);

    // The kubelet's swap: a new link renamed over `..data`.
    let tmp = secrets.path().join("..data_tmp");
    std::os::unix::fs::symlink(&v2, &tmp).unwrap();
    std::fs::rename(&tmp, &data).unwrap();
    eventually(Duration::from_secs(5), "the new token taken", || async {
        (status(&g, NEW).await == 200).then_some(())
    })
    .await;
    // No overlap configured: the old token is refused from the moment the new one is taken.
    assert_eq!(status(&g, OLD).await, 401);

    // The Secret emptied: logged, and the gateway keeps the token it has.
    std::fs::write(v2.join("worker-token"), "").unwrap();
    eventually(
        Duration::from_secs(5),
        "the broken source logged",
        || async {
            g.log()
                .contains("worker token source unreadable")
                .then_some(())
        },
    )
    .await;
    assert_eq!(status(&g, NEW).await, 200);
    let log = g.log();
    assert_eq!(
        log.matches("worker token source unreadable").count(),
        1,
        "logged once, not every second: {log}"
    );
    assert!(!log.contains(OLD) && !log.contains(NEW), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlap_beyond_thirty_days_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("auth.toml"),
        "[auth]\nprevious_token_grace_seconds = 2592001\n",
    )
    .unwrap();
    let (ok, text) = check_policy_dir(dir.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains("auth.toml:2") && text.contains("auth.previous_token_grace_seconds"),
        "{text}"
    );
}
