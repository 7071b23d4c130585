//! The objects the cluster agrees on. Each carries an ID and a version (the Raft log index of
//! the change that last wrote it); an update names the version it read and is refused if the
//! object changed meanwhile.

mod cluster;
mod container;
mod generic;
mod lease;
mod mount;
mod network;
mod node;
mod registry;
mod secret;
mod service;
mod task;

pub use cluster::{CaRotation, Cluster, ClusterConfig, JoinTokens, RootCa, TokenRecord};
pub use container::{signal_number, ContainerOptions, HostMapping, Ulimit, ULIMITS};
pub use generic::{check_generic_kind, generic_env_var, GenericResources, GenericUnits};
pub use lease::{
    validate_lock_request, Lease, FORGET_EXPIRED_AFTER_MS, MAX_LEASE_MS, MAX_LOCK_HOLDER,
    MAX_LOCK_NAME, MIN_LEASE_MS,
};
pub use mount::{check_volume_name, validate_mounts, Mount, MountKind};
pub use network::{
    AddressPool, EndpointMode, IngressAddress, Ipv4Subnet, Network, NetworkAllocation,
    NetworkAttachment, NetworkAttachmentConfig, NetworkDriver, NetworkSpec, VirtualIp,
    INGRESS_NETWORK,
};
pub use node::{
    Availability, Node, NodeDescription, NodeResources, NodeSpec, NodeState, NodeStatus,
    ParseEnumError, Role, PROCESS_RUNTIME,
};
pub use registry::{RegistryAuth, RegistryCredentials};
pub use secret::{
    base64_bytes, check_file_name, validate_file_references, FileData, FileKind, FileReference,
    FileSpec, StoredFile, TaskFileData, DEFAULT_FILE_MODE, MAX_FILE_DATA,
};
pub use service::{
    is_current, Checkpoint, FailureAction, HealthCheck, PortConfig, Protocol, PublishMode,
    Resources, RestartCondition, RestartPolicy, Service, ServiceMode, ServiceSpec, SpecError,
    TaskSpec, TrafficPolicy, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus, INGRESS_PORTS,
};
pub use task::{Task, TaskReport, TaskState, TaskStatus};

/// Object IDs: 25 lowercase base-36 characters, like Swarm's. Users may name an object by any
/// unambiguous prefix of its ID.
pub type ObjectId = String;

/// The kinds of object, for messages and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cluster,
    Node,
    Service,
    Task,
    Network,
    Secret,
    Config,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::Service => "service",
            Kind::Task => "task",
            Kind::Network => "network",
            Kind::Secret => "secret",
            Kind::Config => "config",
        })
    }
}

/// Declares a fieldless enum that reads and prints as lowercase words, for the command line
/// and JSON alike.
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $word)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word users type and read.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::model::ParseEnumError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text.to_ascii_lowercase().as_str() {
                    $($word => Ok($name::$variant),)+
                    _ => Err($crate::model::ParseEnumError {
                        what: stringify!($name),
                        given: text.to_string(),
                        expected: &[$($word),+],
                    }),
                }
            }
        }
    };
}
pub(crate) use word_enum;
