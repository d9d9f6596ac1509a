//! Folder watching for hot reload. Watches the *folder* (not the files) so editors' rename-over
//! and Kubernetes ConfigMap `..data` symlink swaps are seen, debounces bursts of events, and
//! calls back once per burst on a dedicated thread. Knows nothing of what the folder holds.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

/// Keeps the watch alive; dropping it stops the callbacks.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Calls `on_change` after each burst of changes in `dir`, `debounce` after the last event.
pub fn watch_folder(
    dir: &Path,
    debounce: Duration,
    name: &str,
    on_change: impl Fn() + Send + 'static,
) -> notify::Result<FolderWatch> {
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if !ev.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let dir: PathBuf = dir.to_path_buf();
    std::thread::Builder::new()
        .name(format!("watch-{name}"))
        .spawn(move || {
            while rx.recv().is_ok() {
                // Debounce: wait until the folder has been quiet for `debounce`.
                while rx.recv_timeout(debounce).is_ok() {}
                tracing::debug!(dir = %dir.display(), "folder changed");
                on_change();
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(FolderWatch { _watcher: watcher })
}
