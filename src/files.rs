//! Writing files so that a reader, another replica or a crash never sees half of one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates `path` as a new file with `mode`: fails if anything exists there, a symbolic link
/// included (`O_CREAT|O_EXCL|O_NOFOLLOW`), so a link planted in a shared folder can never
/// redirect the write to another file.
pub fn create_exclusive(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .mode(mode)
        .open(path)
}

/// Writes `contents` to `path` with `mode`: a new temp file beside it (hidden, so folder scans
/// skip it; a random name, created exclusively without following links), fsync, rename over
/// `path`, fsync of the folder. Creates the folder if needed; on any failure the temp file is
/// removed and `path` is as it was.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
    let mut created = false;
    let result = (|| {
        let mut f = create_exclusive(&tmp, mode)?;
        created = true;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    // Only what this call created is removed: never a file someone else put at the name.
    if result.is_err() && created {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_with_the_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key.pem");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
        // A folder that cannot be written: an error, and the old file untouched.
        assert!(write_atomic(&dir.path().join("sub/key.pem/x"), b"three", 0o600).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }

    #[test]
    fn an_exclusive_create_never_follows_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = dir.path().join("planted");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_exclusive(&link, 0o600).is_err());
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("absent"), &dangling).unwrap();
        assert!(create_exclusive(&dangling, 0o600).is_err());
        assert!(
            !dir.path().join("absent").exists(),
            "created through the link"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // The planted links are left as they were, not removed or replaced.
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
