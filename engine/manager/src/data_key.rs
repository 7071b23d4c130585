//! The managers' data key: the AES-256-GCM key that seals secrets before they are written to
//! the Raft log, so that neither the log, nor a snapshot, nor a copy of either gives a secret
//! away. The key itself never enters the log: the first manager makes it at `swarm init`, and
//! it reaches the other managers only over mutual TLS (in the answer to a manager's join, or
//! to the certificate renewal of a worker just promoted). Each manager keeps it beside its
//! certificates, readable by the daemon's user only.

use std::path::{Path, PathBuf};

use essaim_api::ControlError;
use essaim_core::model::{FileData, RegistryAuth, RegistryCredentials, ServiceSpec};
use parking_lot::RwLock;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use crate::identity::credentials;

const KEY_FILE: &str = "data.key";
const KEY_LEN: usize = 32;

/// This manager's copy of the data key, if it has one (a worker has none).
pub struct DataKey {
    path: PathBuf,
    key: RwLock<Option<[u8; KEY_LEN]>>,
}

impl DataKey {
    /// The key saved in `data_dir`, if any.
    ///
    /// # Errors
    /// The file exists but cannot be read, or is not a key.
    pub fn load(data_dir: &Path) -> std::io::Result<DataKey> {
        let path = credentials::dir(data_dir).join(KEY_FILE);
        let key = match std::fs::read(&path) {
            Ok(bytes) => Some(key_of(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(DataKey {
            path,
            key: RwLock::new(key),
        })
    }

    /// Makes a new key and saves it, as the first manager does at `swarm init`.
    ///
    /// # Errors
    /// It cannot be saved.
    pub fn generate(&self) -> Result<(), ControlError> {
        let mut key = [0u8; KEY_LEN];
        rand::thread_rng().fill_bytes(&mut key);
        self.install(&key)
    }

    /// Saves the key another manager sent and uses it from now on.
    ///
    /// # Errors
    /// Not a key, or it cannot be saved.
    pub fn install(&self, bytes: &[u8]) -> Result<(), ControlError> {
        let key = key_of(bytes).map_err(ControlError::Internal)?;
        save(&self.path, &key)
            .map_err(|e| ControlError::Internal(format!("cannot save the data key: {e}")))?;
        *self.key.write() = Some(key);
        Ok(())
    }

    /// The key, for a manager that joins or a worker promoted; `None` where this node has none.
    pub fn export(&self) -> Option<Vec<u8>> {
        self.key.read().map(|k| k.to_vec())
    }

    fn cipher(&self) -> Result<LessSafeKey, ControlError> {
        let key = self.key.read().ok_or_else(|| {
            ControlError::FailedPrecondition(
                "this manager has no data key to seal or open secrets with: it joined before \
                 secrets existed; demote it and promote it again to give it the key"
                    .into(),
            )
        })?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key)
            .map_err(|_| ControlError::Internal("the data key is unusable".into()))?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Seals `data` for the object `id`: a fresh random nonce each time.
    ///
    /// # Errors
    /// This manager has no key.
    pub fn seal(&self, id: &str, data: &[u8]) -> Result<FileData, ControlError> {
        let (nonce, ciphertext) = self.seal_bytes(id, data)?;
        Ok(FileData::Sealed { nonce, ciphertext })
    }

    /// The data of the object `id`: a config's as it is, a secret's opened.
    ///
    /// # Errors
    /// No key, or sealed data that does not open with it (another key, another object).
    pub fn open(&self, id: &str, data: &FileData) -> Result<Vec<u8>, ControlError> {
        match data {
            FileData::Plain(data) => Ok(data.clone()),
            FileData::Sealed { nonce, ciphertext } => self.open_bytes(id, nonce, ciphertext),
        }
    }

    /// Seals the registry credentials the client gave with `spec`, if it gave any. When the
    /// service's current credentials are the same, the sealed copy it has is kept: giving the
    /// same credentials again changes nothing, and replaces no task.
    ///
    /// # Errors
    /// This manager has no key.
    pub fn seal_registry_auth(
        &self,
        spec: &mut ServiceSpec,
        current: Option<&ServiceSpec>,
    ) -> Result<(), ControlError> {
        let Some(RegistryAuth::Given(given)) = &spec.task.registry_auth else {
            return Ok(());
        };
        let kept = current
            .and_then(|c| c.task.registry_auth.as_ref())
            .filter(|sealed| self.open_registry_auth(&spec.name, sealed).as_ref() == Some(given));
        let sealed = match kept {
            Some(sealed) => sealed.clone(),
            None => {
                // Serializing plain data structures cannot fail.
                let json = serde_json::to_vec(given).unwrap_or_default();
                let associated = RegistryAuth::associated_data(&spec.name);
                let (nonce, ciphertext) = self.seal_bytes(&associated, &json)?;
                RegistryAuth::Sealed { nonce, ciphertext }
            }
        };
        spec.task.registry_auth = Some(sealed);
        Ok(())
    }

    /// The credentials of service `service_name`, opened; `None` if they do not open here.
    pub fn open_registry_auth(
        &self,
        service_name: &str,
        auth: &RegistryAuth,
    ) -> Option<RegistryCredentials> {
        match auth {
            RegistryAuth::Given(credentials) => Some(credentials.clone()),
            RegistryAuth::Sealed { nonce, ciphertext } => {
                let associated = RegistryAuth::associated_data(service_name);
                let json = self.open_bytes(&associated, nonce, ciphertext).ok()?;
                serde_json::from_slice(&json).ok()
            }
        }
    }

    /// `(nonce, ciphertext)` of `data`, the associated data `associated` bound in.
    fn seal_bytes(
        &self,
        associated: &str,
        data: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), ControlError> {
        let cipher = self.cipher()?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut ciphertext = data.to_vec();
        cipher
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated.as_bytes()),
                &mut ciphertext,
            )
            .map_err(|_| ControlError::Internal("cannot seal the secret".into()))?;
        Ok((nonce.to_vec(), ciphertext))
    }

    fn open_bytes(
        &self,
        associated: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, ControlError> {
        let cipher = self.cipher()?;
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| ControlError::Internal(format!("secret {associated}: malformed nonce")))?;
        let mut opened = ciphertext.to_vec();
        let plain = cipher
            .open_in_place(nonce, Aad::from(associated.as_bytes()), &mut opened)
            .map_err(|_| {
                ControlError::Internal(format!(
                    "secret {associated} does not open with this manager's data key"
                ))
            })?;
        Ok(plain.to_vec())
    }
}

fn key_of(bytes: &[u8]) -> Result<[u8; KEY_LEN], String> {
    bytes
        .try_into()
        .map_err(|_| format!("a data key has {KEY_LEN} bytes, not {}", bytes.len()))
}

/// Readable by its owner only, and never half-written.
fn save(path: &Path, key: &[u8; KEY_LEN]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    credentials::write_private(path, key)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_opens_only_with_its_key_and_for_its_object() {
        let dir = tempfile::tempdir().expect("dir");
        let key = DataKey::load(dir.path()).expect("none yet");
        assert!(key.seal("s1", b"pw").is_err(), "no key, no sealing");
        key.generate().expect("generate");
        let sealed = key.seal("s1", b"hunter2").expect("seal");
        let FileData::Sealed { ciphertext, .. } = &sealed else {
            panic!("a secret is sealed");
        };
        assert!(!ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("s1", &sealed).expect("open"), b"hunter2");
        assert!(key.open("s2", &sealed).is_err(), "bound to its object");

        // The key survives a restart, and another manager given it opens the same data.
        let reloaded = DataKey::load(dir.path()).expect("reload");
        assert_eq!(reloaded.open("s1", &sealed).expect("open"), b"hunter2");
        let other_dir = tempfile::tempdir().expect("dir");
        let other = DataKey::load(other_dir.path()).expect("none");
        other.install(&key.export().expect("key")).expect("install");
        assert_eq!(other.open("s1", &sealed).expect("open"), b"hunter2");
        let stranger = DataKey::load(tempfile::tempdir().expect("dir").path()).expect("none");
        stranger.generate().expect("generate");
        assert!(
            stranger.open("s1", &sealed).is_err(),
            "another cluster's key"
        );
    }
}
