//! Published ports. An ingress port opens on every node (the routing mesh), so its number and
//! protocol belong to one service in the whole cluster, and no other service may publish it,
//! in either mode. Host ports open only where a task runs: two services may share one, and
//! the scheduler keeps their tasks on different nodes.
//!
//! The leader fills in the ingress ports a spec leaves out (`-p 80`) before it writes the
//! spec, so every node and every later reader sees the same number; the state checks the
//! ports again when it applies the spec.

use crate::model::{
    NetworkAttachmentConfig, PortConfig, PublishMode, ServiceSpec, INGRESS_NETWORK, INGRESS_PORTS,
};
use crate::state::ClusterState;

use super::AllocError;

/// Gives each ingress port of `spec` left at 0 a number: the one the service already had for
/// that target and protocol, else the lowest free one in [`INGRESS_PORTS`]. `service_id` is
/// the service being updated (its own ports are no conflict), `None` for a new one.
///
/// # Errors
/// A port another service publishes (naming it), or no free port left.
pub fn assign(
    state: &ClusterState,
    service_id: Option<&str>,
    spec: &mut ServiceSpec,
) -> Result<(), AllocError> {
    check(state, service_id, spec)?;
    let had: Vec<PortConfig> = service_id
        .and_then(|id| state.service(id).ok())
        .map(|service| service.spec.ports.clone())
        .unwrap_or_default();
    let taken_elsewhere = |port: &PortConfig, number: u16| {
        let candidate = PortConfig {
            published: number,
            ..*port
        };
        owner(state, service_id, &candidate).is_some()
    };
    for index in 0..spec.ports.len() {
        let port = spec.ports[index];
        if port.mode != PublishMode::Ingress || port.published != 0 {
            continue;
        }
        let in_spec = |number: u16| {
            spec.ports
                .iter()
                .any(|p| p.published == number && p.protocol == port.protocol)
        };
        let kept = had.iter().find(|old| {
            old.mode == PublishMode::Ingress
                && old.target == port.target
                && old.protocol == port.protocol
                && old.published != 0
                && !in_spec(old.published)
        });
        let number = match kept {
            Some(old) => old.published,
            None => INGRESS_PORTS
                .clone()
                .find(|&number| !in_spec(number) && !taken_elsewhere(&port, number))
                .ok_or(AllocError::NoFreePort)?,
        };
        spec.ports[index].published = number;
    }
    Ok(())
}

/// Whether `spec`'s published ports are free for it: no other service publishes one of its
/// ingress ports, nor in ingress mode one of its host ports.
///
/// # Errors
/// The first port taken, naming the service that has it.
pub fn check(
    state: &ClusterState,
    service_id: Option<&str>,
    spec: &ServiceSpec,
) -> Result<(), AllocError> {
    for port in spec.ports.iter().filter(|p| p.published != 0) {
        if let Some(service) = owner(state, service_id, port) {
            return Err(AllocError::PortTaken {
                port: port.published_label(),
                service,
            });
        }
    }
    Ok(())
}

/// Whether the spec publishes a port on the routing mesh.
pub fn uses_mesh(spec: &ServiceSpec) -> bool {
    spec.ports.iter().any(|p| p.mode == PublishMode::Ingress)
}

/// Puts the service on the ingress network when it publishes an ingress port, as its first
/// network (its default route: the answers to the mesh's clients leave through the ingress
/// bridge, the one bridge a node routes from; its own networks follow, the first of them
/// its name server's), and takes it off when it publishes none. The caller makes sure the
/// network exists.
pub fn join_ingress(spec: &mut ServiceSpec) {
    let networks = &mut spec.task.networks;
    networks.retain(|n| n.target != INGRESS_NETWORK);
    if uses_mesh(spec) {
        spec.task.networks.insert(
            0,
            NetworkAttachmentConfig {
                target: INGRESS_NETWORK.to_string(),
                aliases: Vec::new(),
            },
        );
    }
}

/// The other service whose ports clash with `port`, if any.
fn owner(state: &ClusterState, service_id: Option<&str>, port: &PortConfig) -> Option<String> {
    state
        .services()
        .filter(|service| Some(service.id.as_str()) != service_id)
        .find(|service| {
            service.spec.ports.iter().any(|other| {
                other.published == port.published
                    && other.protocol == port.protocol
                    && (other.mode == PublishMode::Ingress || port.mode == PublishMode::Ingress)
            })
        })
        .map(|service| service.spec.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::model::{Protocol, ServiceMode, TaskSpec};
    use crate::testing::StateLog;

    /// Service `name` publishing `ports`, not yet in any state.
    fn service_named(name: &str, ports: Vec<PortConfig>) -> crate::model::Service {
        let mut service = crate::testing::service(
            ServiceMode::Replicated { replicas: 1 },
            TaskSpec {
                image: "web".to_string(),
                ..TaskSpec::default()
            },
        );
        service.id = format!("svc-{name}");
        service.spec.name = name.to_string();
        service.spec.ports = ports;
        service
    }

    /// A state holding `web`, publishing `ports`.
    fn with_web(ports: Vec<PortConfig>) -> ClusterState {
        let mut log = StateLog::new();
        let service = service_named("web", ports);
        log.apply(vec![Command::CreateService { service }])
            .expect("web applies");
        log.state
    }

    fn ingress(published: u16, target: u16) -> PortConfig {
        PortConfig::tcp(published, target)
    }

    fn host(published: u16, target: u16) -> PortConfig {
        PortConfig {
            mode: PublishMode::Host,
            ..PortConfig::tcp(published, target)
        }
    }

    #[test]
    fn a_port_left_out_gets_the_lowest_free_one_and_keeps_it_on_update() {
        let state = with_web(vec![ingress(30000, 80)]);
        let mut api = service_named("api", vec![ingress(0, 8080), ingress(0, 9090)]).spec;
        assign(&state, None, &mut api).unwrap();
        let numbers: Vec<u16> = api.ports.iter().map(|p| p.published).collect();
        assert_eq!(numbers, [30001, 30002]);

        let web = state.service("web").unwrap();
        let mut update = web.spec.clone();
        update.ports = vec![ingress(0, 80)];
        assign(&state, Some(&web.id), &mut update).unwrap();
        assert_eq!(
            update.ports[0].published, 30000,
            "the service keeps its port"
        );
    }

    #[test]
    fn an_ingress_port_is_one_service_s_and_says_whose() {
        let state = with_web(vec![ingress(8080, 80)]);
        for taken in [ingress(8080, 81), host(8080, 81)] {
            let mut api = service_named("api", vec![taken]).spec;
            assert_eq!(
                assign(&state, None, &mut api).unwrap_err().to_string(),
                "--publish: port 8080/tcp is already published by service web"
            );
        }
        let udp = PortConfig {
            protocol: Protocol::Udp,
            ..ingress(8080, 53)
        };
        let mut udp = service_named("dns", vec![udp]).spec;
        assert_eq!(assign(&state, None, &mut udp), Ok(()), "UDP 8080 is free");
        let web = state.service("web").unwrap();
        let mut same = web.spec.clone();
        assert_eq!(assign(&state, Some(&web.id), &mut same), Ok(()));
    }

    #[test]
    fn a_service_is_on_the_ingress_network_while_it_publishes_an_ingress_port() {
        let mut spec = service_named("web", vec![ingress(8080, 80)]).spec;
        spec.task.networks = vec![NetworkAttachmentConfig {
            target: "back".into(),
            aliases: vec![],
        }];
        join_ingress(&mut spec);
        join_ingress(&mut spec);
        let targets: Vec<&str> = spec
            .task
            .networks
            .iter()
            .map(|n| n.target.as_str())
            .collect();
        assert_eq!(targets, ["ingress", "back"]);
        spec.ports = vec![host(8080, 80)];
        join_ingress(&mut spec);
        let targets: Vec<&str> = spec
            .task
            .networks
            .iter()
            .map(|n| n.target.as_str())
            .collect();
        assert_eq!(targets, ["back"]);
    }

    #[test]
    fn host_ports_may_be_shared_and_are_not_assigned_here() {
        let state = with_web(vec![host(8080, 80)]);
        let mut api = service_named("api", vec![host(8080, 81), host(0, 82)]).spec;
        assign(&state, None, &mut api).unwrap();
        assert_eq!(api.ports, [host(8080, 81), host(0, 82)]);
    }
}
