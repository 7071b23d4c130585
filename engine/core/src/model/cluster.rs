//! The cluster object: identity, settings and join tokens, one per cluster.

use serde::{Deserialize, Serialize};

use super::{AddressPool, ObjectId};
use crate::time::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: ObjectId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub config: ClusterConfig,
    pub join_tokens: JoinTokens,
    /// The cluster's certificate authority. Its key signs node certificates and derives the
    /// join token secrets; only managers hold it.
    pub root_ca: RootCa,
    /// A CA rotation under way, if any.
    pub ca_rotation: Option<CaRotation>,
    /// Where networks' subnets come from; set by `swarm init`, fixed afterwards.
    #[serde(default)]
    pub address_pool: AddressPool,
}

impl Cluster {
    /// The CA certificates every node must trust now: the signing CA, and during a rotation
    /// the other one too.
    pub fn trusted_roots_pem(&self) -> String {
        match &self.ca_rotation {
            None => self.root_ca.cert_pem.clone(),
            Some(CaRotation::Trusting { next }) => {
                format!("{}{}", self.root_ca.cert_pem, next.cert_pem)
            }
            Some(CaRotation::Reissuing { previous_cert_pem }) => {
                format!("{}{}", self.root_ca.cert_pem, previous_cert_pem)
            }
        }
    }
}

/// The stages of `swarm ca --rotate`. No node may show a certificate of the new CA before
/// every node trusts it, and the old CA stays trusted until no node shows one of its
/// certificates any more.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaRotation {
    /// Nodes are learning to trust `next`; the old CA still signs.
    Trusting { next: RootCa },
    /// The new CA signs; nodes are renewing their certificates; the previous CA is still
    /// trusted.
    Reissuing { previous_cert_pem: String },
}

impl CaRotation {
    pub fn stage(&self) -> &'static str {
        match self {
            CaRotation::Trusting { .. } => "trusting the new CA",
            CaRotation::Reissuing { .. } => "renewing certificates",
        }
    }
}

impl std::fmt::Debug for CaRotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keeps the next CA's key out of any log.
        f.write_str(self.stage())
    }
}

/// The cluster CA, in PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for RootCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key must never reach a log.
        f.debug_struct("RootCa").finish_non_exhaustive()
    }
}

/// Settings that `swarm update` changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// How often nodes report to the leader. A node is down after
    /// `heartbeat_misses_before_down` periods without a report.
    pub heartbeat_period_ms: u64,
    pub heartbeat_misses_before_down: u32,
    /// Dead tasks kept per slot (or per node, for global services).
    pub task_history_limit: u32,
    /// How long node certificates are valid; nodes renew them at half that age.
    pub cert_expiry_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        // Faster than Swarm's 5 s x 3: a lost node is noticed in 1.5 s.
        ClusterConfig {
            heartbeat_period_ms: 500,
            heartbeat_misses_before_down: 3,
            task_history_limit: 5,
            cert_expiry_ms: 90 * 24 * 3_600_000,
        }
    }
}

impl ClusterConfig {
    /// How long a node may stay silent before it is marked down.
    pub fn node_down_after_ms(&self) -> u64 {
        self.heartbeat_period_ms
            .saturating_mul(u64::from(self.heartbeat_misses_before_down))
    }
}

/// The tokens that admit new nodes, one per role. Rotating one makes the old value useless at
/// once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokens {
    pub worker: TokenRecord,
    pub manager: TokenRecord,
}

/// What the managers keep of a join token: not the secret, only its hash, and the nonce from
/// which the secret is derived again (with the CA key) when `swarm join-token` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub nonce: String,
    pub secret_sha256: String,
}
