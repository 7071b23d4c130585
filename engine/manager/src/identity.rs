//! Who this node is in its swarm, kept in `swarm.json` in the data directory: the node's IDs,
//! its cluster, and the managers it last knew (a worker's only way back after a restart).

use std::io::Write;
use std::path::{Path, PathBuf};

use essaim_core::model::ObjectId;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::raft::RaftId;

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

/// `value` in base 36, left-padded with zeros to `width`.
pub fn base36(mut value: u128, width: usize) -> String {
    let mut digits = Vec::new();
    while value > 0 {
        digits.push(BASE36[(value % 36) as usize]);
        value /= 36;
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

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
