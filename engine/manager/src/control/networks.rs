//! What the leader does with the network requests of the control API. A network's subnet,
//! gateway and VXLAN id are chosen here, by `essaim_core::allocator`, and written with the
//! network in one entry: a network never exists without them. Task addresses and virtual IPs
//! are the orchestration loop's to allocate.

use essaim_api::control::NetworkView;
use essaim_api::{ControlError, ControlReply};
use essaim_core::allocator;
use essaim_core::model::{Network, NetworkSpec, INGRESS_NETWORK};
use essaim_core::state::AddressHolder;
use essaim_core::{ClusterState, Command};

use crate::identity::new_object_id;
use crate::swarm::Swarm;

/// # Errors
/// An invalid name, a name taken, or a subnet or gateway the allocator refuses (naming the
/// flag).
pub async fn create(swarm: &Swarm, spec: NetworkSpec) -> Result<ControlReply, ControlError> {
    validate_name(&spec.name)?;
    swarm.replica.before_write().await?;
    let network = {
        let state = swarm.replica.state();
        if state.network_by_name(&spec.name).is_some() {
            return Err(ControlError::Conflict(format!(
                "network {} already exists",
                spec.name
            )));
        }
        allocated(&state, spec)?
    };
    let id = network.id.clone();
    tracing::info!(
        network = %network.spec.name,
        subnet = %network.allocation.subnet,
        vxlan_id = network.allocation.vxlan_id,
        "network created"
    );
    swarm
        .replica
        .write_one(Command::CreateNetwork { network })
        .await?;
    let state = swarm.replica.state();
    Ok(ControlReply::Network(view(&state, state.network(&id)?)))
}

/// A new network of `spec`, with what the allocator chose for it.
fn allocated(state: &ClusterState, spec: NetworkSpec) -> Result<Network, ControlError> {
    Ok(Network {
        id: new_object_id(),
        version: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        allocation: allocator::allocate_network(state, &spec)?,
        spec,
    })
}

/// Makes the routing mesh's network, `ingress`, if the cluster has none: from the address
/// pool, as any network.
///
/// # Errors
/// A user's network holds the name, the pool is used up, or no quorum.
pub async fn ensure_ingress(swarm: &Swarm) -> Result<(), ControlError> {
    let network = {
        let state = swarm.replica.state();
        if state.ingress_network().is_some() {
            return Ok(());
        }
        if state.network_by_name(INGRESS_NETWORK).is_some() {
            return Err(ControlError::Conflict(format!(
                "--publish: the routing mesh needs the network name {INGRESS_NETWORK}, which a network made by network create holds: remove it, or publish in mode=host"
            )));
        }
        let spec = NetworkSpec {
            name: INGRESS_NETWORK.to_string(),
            ingress: true,
            ..NetworkSpec::default()
        };
        allocated(&state, spec)?
    };
    tracing::info!(subnet = %network.allocation.subnet, "ingress network created");
    match swarm
        .replica
        .write_one(Command::CreateNetwork { network })
        .await
    {
        // Another request made it meanwhile.
        Err(_) if swarm.replica.state().ingress_network().is_some() => Ok(()),
        written => written.map(|_| ()),
    }
}

/// # Errors
/// No quorum.
pub async fn list(swarm: &Swarm) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let state = swarm.replica.state();
    Ok(ControlReply::Networks(
        state.networks().map(|n| view(&state, n)).collect(),
    ))
}

/// # Errors
/// Unknown network, or no quorum.
pub async fn inspect(swarm: &Swarm, name: &str) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let state = swarm.replica.state();
    Ok(ControlReply::Network(view(&state, state.network(name)?)))
}

/// # Errors
/// Unknown network, or one still in use (naming its users).
pub async fn remove(swarm: &Swarm, name: &str) -> Result<ControlReply, ControlError> {
    swarm.replica.before_write().await?;
    let id = swarm.replica.state().network(name)?.id.clone();
    swarm
        .replica
        .write_one(Command::RemoveNetwork { id: id.clone() })
        .await?;
    tracing::info!(network = %id, "network removed");
    Ok(ControlReply::Done)
}

fn view(state: &ClusterState, network: &Network) -> NetworkView {
    let services = state
        .services()
        .filter(|s| {
            s.spec
                .task
                .networks
                .iter()
                .any(|n| n.target == network.spec.name)
        })
        .map(|s| s.spec.name.clone())
        .collect();
    let tasks = state
        .tasks()
        .filter(|t| {
            t.networks.iter().any(|a| {
                a.network_id == network.id
                    && state.address_holder(&network.id, a.address)
                        == Some(&AddressHolder::Task(t.id.clone()))
            })
        })
        .count() as u64;
    NetworkView {
        network: network.clone(),
        services,
        tasks,
        free_addresses: allocator::free_addresses(state, network),
    }
}

/// Network names become device names and DNS names: letters, digits, `-`, `_` and `.`,
/// starting with a letter or digit, as Docker's.
fn validate_name(name: &str) -> Result<(), ControlError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ControlError::InvalidArgument(format!(
            "network name {name:?} is invalid: use up to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}
