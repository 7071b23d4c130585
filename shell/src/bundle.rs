//! Client bundles: the certificate, key and CA files that `swarm ca issue-client` writes and
//! `--tls-dir` reads, owner-only on disk.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use essaim_api::tls::Credentials;

use crate::UsageError;

/// The client certificate, issued by the swarm's CA.
pub const CERT_FILE: &str = "client.crt";
/// The client's private key, made on the operator's machine: it never went to the cluster.
pub const KEY_FILE: &str = "client.key";
/// The CA roots the client trusts managers by (two while the CA is being rotated).
pub const CA_FILE: &str = "ca.crt";

/// The bundle's files in `dir`, key first: it is the one whose presence means "a bundle".
fn files(dir: &Path) -> [(PathBuf, &'static str); 3] {
    [
        (dir.join(KEY_FILE), "key"),
        (dir.join(CERT_FILE), "certificate"),
        (dir.join(CA_FILE), "CA certificate"),
    ]
}

/// Checks that a bundle can be written to `dir`, and creates `dir` (owner-only) if missing.
/// Done before the certificate is asked for, so that a refusal costs nothing.
///
/// # Errors
/// A [`UsageError`] when `dir` already holds a bundle file and `force` is not set; an I/O
/// error when `dir` cannot be created.
pub fn prepare(dir: &Path, force: bool) -> anyhow::Result<()> {
    if !force {
        if let Some((path, _)) = files(dir).into_iter().find(|(path, _)| path.exists()) {
            return Err(UsageError(format!(
                "{} already exists: pass --force to overwrite the bundle in {}, or choose \
                 another --out directory",
                path.display(),
                dir.display()
            ))
            .into());
        }
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))
}

/// Writes `credentials` to `dir` as client.key, client.crt and ca.crt, each readable and
/// writable by its owner only. Existing files are replaced when `force` is set, else refused.
///
/// # Errors
/// As [`prepare`]; or a file cannot be written.
pub fn write(dir: &Path, credentials: &Credentials, force: bool) -> anyhow::Result<()> {
    prepare(dir, force)?;
    let contents = [
        &credentials.key_pem,
        &credentials.cert_pem,
        &credentials.roots_pem,
    ];
    for ((path, _), content) in files(dir).into_iter().zip(contents) {
        write_private(&path, content, force)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Creates `path` with mode 0600 and writes `content` to it. The file is always created anew
/// (an old one is removed first when `replace` is set), so that it never keeps an older, wider
/// mode and a symbolic link planted in its place is not followed.
fn write_private(path: &Path, content: &str, replace: bool) -> io::Result<()> {
    if replace {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    file.sync_all()
}

/// Reads the bundle in `dir`.
///
/// # Errors
/// A [`UsageError`] naming the file that is missing or unreadable.
pub fn load(dir: &Path) -> anyhow::Result<Credentials> {
    let [key, cert, roots] = files(dir).map(|(path, what)| {
        fs::read_to_string(&path).map_err(|e| {
            UsageError(format!(
                "cannot read the client {what} {}: {e} (is --tls-dir a bundle made by \
                 'essaim swarm ca issue-client'?)",
                path.display()
            ))
        })
    });
    // In the order of `files`, so that an empty directory is reported by its missing key.
    let key_pem = key?;
    Ok(Credentials {
        cert_pem: cert?,
        key_pem,
        roots_pem: roots?,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{Exit, UsageError};

    fn credentials(tag: &str) -> Credentials {
        Credentials {
            cert_pem: format!("cert {tag}\n"),
            key_pem: format!("key {tag}\n"),
            roots_pem: format!("roots {tag}\n"),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn a_bundle_is_three_owner_only_files_in_an_owner_only_dir() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("bundle");
        write(&dir, &credentials("a"), false).expect("written");
        assert_eq!(mode(&dir), 0o700);
        for (name, content) in [
            (CERT_FILE, "cert a\n"),
            (KEY_FILE, "key a\n"),
            (CA_FILE, "roots a\n"),
        ] {
            let path = dir.join(name);
            assert_eq!(fs::read_to_string(&path).expect("read"), content);
            assert_eq!(mode(&path), 0o600, "{name}");
        }
        let loaded = load(&dir).expect("loaded");
        assert_eq!(loaded.cert_pem, "cert a\n");
        assert_eq!(loaded.key_pem, "key a\n");
        assert_eq!(loaded.roots_pem, "roots a\n");
    }

    #[test]
    fn a_bundle_is_not_overwritten_without_force() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path();
        write(dir, &credentials("old"), false).expect("written");
        let error = write(dir, &credentials("new"), false).expect_err("refused");
        assert!(error.is::<UsageError>(), "{error}");
        assert!(error.to_string().contains("--force"), "{error}");
        assert!(error.to_string().contains(KEY_FILE), "{error}");
        assert_eq!(
            fs::read_to_string(dir.join(KEY_FILE)).expect("read"),
            "key old\n"
        );

        // With --force, the files are replaced, and a file left with a wider mode is not.
        fs::set_permissions(dir.join(CA_FILE), fs::Permissions::from_mode(0o644)).expect("chmod");
        write(dir, &credentials("new"), true).expect("overwritten");
        assert_eq!(
            fs::read_to_string(dir.join(KEY_FILE)).expect("read"),
            "key new\n"
        );
        assert_eq!(mode(&dir.join(CA_FILE)), 0o600);
    }

    #[test]
    fn a_missing_bundle_file_is_named() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path();
        write(dir, &credentials("a"), false).expect("written");
        fs::remove_file(dir.join(CA_FILE)).expect("removed");
        let error = load(dir).expect_err("ca.crt is missing");
        assert_eq!(Exit::of(&error), Exit::Usage);
        let message = error.to_string();
        assert!(
            message.contains(&dir.join(CA_FILE).display().to_string()),
            "{message}"
        );
        assert!(!message.contains(CERT_FILE), "{message}");
    }
}
