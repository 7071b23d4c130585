//! Who this node is in its swarm, kept in `swarm.json` in the data directory: the node's IDs,
//! its cluster, and the managers it last knew (a worker's only way back after a restart).

use std::io::Write;
use std::path::{Path, PathBuf};

use essaim_api::tls::base36;
use essaim_core::model::ObjectId;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A node's ID in Raft (managers vote under it).
pub type RaftId = u64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmFile {
    pub node_id: ObjectId,
    pub raft_id: RaftId,
    pub cluster_id: ObjectId,
    pub manager_addrs: Vec<String>,
}

impl SwarmFile {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("swarm.json")
    }

    /// The node's membership, or `None` when it is in no swarm.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<SwarmFile>> {
        let path = Self::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("{} is damaged: {e}", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes the file atomically: a crash leaves the old version or the new, never half.
    ///
    /// # Errors
    /// The data directory cannot be written.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let path = Self::path(data_dir);
        let temporary = path.with_extension("json.tmp");
        {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    }
}

/// The node's certificate, key and trusted roots, in `certificates/` in the data directory.
pub mod credentials {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    use essaim_api::tls::Credentials;

    const CERT: &str = "node.crt";
    const KEY: &str = "node.key";
    const ROOTS: &str = "roots.crt";

    pub fn dir(data_dir: &Path) -> PathBuf {
        data_dir.join("certificates")
    }

    /// Writes the credentials, each file readable by its owner only, the key first written
    /// under a temporary name and renamed, so a crash never leaves a half-written key.
    ///
    /// # Errors
    /// The directory cannot be written.
    pub fn save(data_dir: &Path, credentials: &Credentials) -> std::io::Result<()> {
        let dir = dir(data_dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        for (name, text) in [
            (KEY, &credentials.key_pem),
            (CERT, &credentials.cert_pem),
            (ROOTS, &credentials.roots_pem),
        ] {
            write_private(&dir.join(name), text.as_bytes())?;
        }
        std::fs::File::open(&dir)?.sync_all()
    }

    /// Writes a file readable by its owner only, first under a temporary name, synced, then
    /// renamed: a crash never leaves it half-written. The caller syncs the directory.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
        let temporary = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    }

    /// The saved credentials, or `None` when there are none.
    ///
    /// # Errors
    /// Some files exist but cannot be read.
    pub fn load(data_dir: &Path) -> std::io::Result<Option<Credentials>> {
        let dir = dir(data_dir);
        if !dir.join(CERT).exists() {
            return Ok(None);
        }
        Ok(Some(Credentials {
            cert_pem: std::fs::read_to_string(dir.join(CERT))?,
            key_pem: std::fs::read_to_string(dir.join(KEY))?,
            roots_pem: std::fs::read_to_string(dir.join(ROOTS))?,
        }))
    }

    /// Saves the credentials, then makes them the ones in use.
    ///
    /// # Errors
    /// They cannot be saved, or rustls refuses them; the old ones stay in use.
    pub fn install(
        data_dir: &Path,
        tls: &essaim_api::tls::TlsState,
        credentials: Credentials,
    ) -> Result<(), essaim_api::ControlError> {
        use essaim_api::ControlError;
        // Check them before they replace anything on disk.
        essaim_api::tls::server_config(&credentials)
            .map_err(|e| ControlError::Internal(format!("unusable certificate: {e}")))?;
        save(data_dir, &credentials)
            .map_err(|e| ControlError::Internal(format!("cannot save certificates: {e}")))?;
        tls.install(credentials)
            .map_err(|e| ControlError::Internal(format!("cannot use the certificates: {e}")))
    }

    /// Deletes the credentials, as `swarm leave` does.
    ///
    /// # Errors
    /// The files exist but cannot be removed.
    pub fn remove(data_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_dir_all(dir(data_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A fresh object ID: 25 base-36 characters from 128 random bits, like Swarm's.
pub fn new_object_id() -> ObjectId {
    base36(rand::thread_rng().gen::<u128>(), 25)
}

/// A fresh Raft ID; never 0, which reads as "none" in logs.
pub fn new_raft_id() -> RaftId {
    rand::thread_rng().gen_range(1..=u64::MAX)
}

/// A random secret of `len` base-36 characters.
pub fn new_secret(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(BASE36[rng.gen_range(0..36)]))
        .collect()
}

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_25_base36_characters() {
        let id = new_object_id();
        assert_eq!(id.len(), 25);
        assert!(id.bytes().all(|b| BASE36.contains(&b)));
        assert_ne!(new_object_id(), id);
    }

    #[test]
    fn swarm_file_round_trips_and_is_absent_before_joining() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(SwarmFile::load(dir.path()).expect("load"), None);
        let file = SwarmFile {
            node_id: new_object_id(),
            raft_id: 42,
            cluster_id: new_object_id(),
            manager_addrs: vec!["127.0.0.1:4001".into()],
        };
        file.save(dir.path()).expect("save");
        assert_eq!(SwarmFile::load(dir.path()).expect("load"), Some(file));
    }
}
