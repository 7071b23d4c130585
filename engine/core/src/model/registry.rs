//! Credentials to pull a service's image from a private registry (`--with-registry-auth`).
//! The shell reads them as the docker CLI does and sends them with the spec; the leader seals
//! them with the managers' data key before the spec is written, so that the Raft log only
//! ever holds them sealed; the leader opens them again only for the nodes it sends the
//! service's tasks to, over their mutual-TLS sessions.

use serde::{Deserialize, Serialize};

/// What a registry takes to let a node pull.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredentials {
    /// The registry, as `docker login` names it (`registry.example.com:5000`).
    pub server_address: String,
    pub username: String,
    pub password: String,
    /// An OAuth identity token, in place of a username and password.
    #[serde(default)]
    pub identity_token: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A password must never reach a log.
        f.debug_struct("RegistryCredentials")
            .field("server_address", &self.server_address)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A service's registry credentials: as the client gave them (only on the way to the leader,
/// and from the leader to the task's node), or sealed (in the cluster state).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryAuth {
    Given(RegistryCredentials),
    Sealed {
        #[serde(with = "super::base64_bytes")]
        nonce: Vec<u8>,
        #[serde(with = "super::base64_bytes")]
        ciphertext: Vec<u8>,
    },
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuth::Given(credentials) => write!(f, "Given({credentials:?})"),
            RegistryAuth::Sealed { .. } => f.write_str("Sealed(..)"),
        }
    }
}

impl RegistryAuth {
    /// What the sealing binds the data to: the service's name, which never changes.
    pub fn associated_data(service_name: &str) -> String {
        format!("registry-auth:{service_name}")
    }
}
