//! Bad configuration and faults on a running gateway: a secret file that disappears, a policy
//! folder that is emptied, and a full disk under the storage folder. Each is reported with a
//! clear error while the gateway keeps running on what it had, and nothing is lost or
//! half-written. (A broken policy is in `reload.rs`; broken, mismatched and half certificate
//! pairs are in `tls.rs`.)

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ROOM_KEY: &str = "bad-config-room-key-0123456789abcdefghij";

/// The default policy, with `/whoami` named `name` and a room key read from `key_file`.
fn policy(name: &str, key_file: &Path) -> String {
    let p = DEFAULT_POLICY.edit("name = \"whoami\"", &format!("name = \"{name}\""));
    p.edit(
        "[rooms]\n",
        &format!(
            "[rooms]\nkeys = [{{ kid = \"k1\", algorithm = \"HS256\", secret = \"file:{}\" }}]\n",
            key_file.display()
        ),
    )
}

async fn live_route(g: &Gateway) -> String {
    let r = g.client(true).get(g.url("/whoami")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    v["route"].as_str().unwrap_or_default().to_string()
}

async fn reload_error(g: &Gateway) -> Option<String> {
    g.admin_json("/status").await["policy"]["last_reload_error"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_file_or_policy_folder_keeps_the_last_good_policy() {
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("room.key");
    std::fs::write(&key_file, ROOM_KEY).unwrap();
    let g = Gateway::start(Options {
        policy: vec![("default.toml".into(), policy("good", &key_file))],
        ..Default::default()
    })
    .await;
    assert_eq!(live_route(&g).await, "good");
    let generation = g.generation().await;

    // The secret file goes away: the reload it triggers is refused and names the file.
    std::fs::remove_file(&key_file).unwrap();
    let (err, _) = eventually(Duration::from_secs(3), "reload refused", || async {
        reload_error(&g).await
    })
    .await;
    assert!(err.contains(&key_file.display().to_string()), "{err}");
    assert_eq!(g.generation().await, generation);
    assert_eq!(live_route(&g).await, "good");
    assert!(!g.log().contains(ROOM_KEY), "the secret reached the log");

    // It comes back: the policy applies again and the error clears.
    std::fs::write(&key_file, ROOM_KEY).unwrap();
    eventually(Duration::from_secs(3), "reload applied", || async {
        reload_error(&g).await.is_none().then_some(())
    })
    .await;
    assert!(g.generation().await > generation);
    let generation = g.generation().await;

    // Every policy file removed: refused, the running policy stays.
    std::fs::remove_file(g.policy_dir().join("default.toml")).unwrap();
    let (err, _) = eventually(Duration::from_secs(3), "empty folder refused", || async {
        reload_error(&g).await
    })
    .await;
    assert!(err.contains("no *.toml policy files"), "{err}");
    assert_eq!(g.generation().await, generation);
    assert_eq!(live_route(&g).await, "good");

    // A new file that only half arrived (cut mid-table) is refused too.
    let full = policy("later", &key_file);
    let cut = full.rfind("[[routes]]").unwrap() + 3;
    std::fs::write(g.policy_dir().join("default.toml"), &full[..cut]).unwrap();
    let (err, _) = eventually(Duration::from_secs(3), "half a file refused", || async {
        reload_error(&g)
            .await
            .filter(|e| e.contains("default.toml"))
    })
    .await;
    eprintln!("half a file: {err}");
    assert_eq!(live_route(&g).await, "good");
    std::fs::write(g.policy_dir().join("default.toml"), &full).unwrap();
    eventually(Duration::from_secs(3), "whole file applied", || async {
        (live_route(&g).await == "later").then_some(())
    })
    .await;
}

/// A small tmpfs mounted over a folder, unmounted when dropped. Needs root (CI runs as root).
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_the_upload_with_507_and_keeps_what_was_stored() {
    let g = Gateway::start(Options::default()).await;
    let Some(_disk) = SmallDisk::mount(&g.data_dir().join("storage"), "1m") else {
        // Mounting needs root; CI sets PORTCULLIS_TEST_REQUIRE_MOUNT so it cannot be skipped.
        assert!(
            std::env::var_os("PORTCULLIS_TEST_REQUIRE_MOUNT").is_none(),
            "cannot mount a small tmpfs (run as root)"
        );
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let c = g.client(true);
    let url = g.url("/admin/storage/full/kept");
    let kept: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let r = c.put(&url).body(kept.clone()).send().await.unwrap();
    assert_eq!(r.status(), 201);

    // Larger than what is left: 507, and neither the new object nor a temp file remains.
    let big = vec![7u8; 900_000];
    let r = c
        .put(g.url("/admin/storage/full/big"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 507);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "storage_full");
    let r = c
        .get(g.url("/admin/storage/full/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Overwriting the stored object with something too big keeps the stored one whole.
    let r = c.put(&url).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 507);
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), kept);
    let names: Vec<String> = std::fs::read_dir(g.data_dir().join("storage/full"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["kept".to_string()], "a temp file was left");
    assert!(
        g.log()
            .contains("storage: write failed; nothing was stored"),
        "{}",
        g.log()
    );

    // The gateway carries on, and once there is room the upload succeeds.
    let r = c.get(g.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .put(g.url("/admin/storage/full/big"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(g.url("/admin/storage/full/big"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().to_vec(), big);
}
