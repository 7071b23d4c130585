use std::collections::BTreeSet;

use super::*;
use crate::error::StateError;
use crate::model::{NetworkAttachmentConfig, ServiceMode, TaskSpec};
use crate::testing::{self, StateLog};

fn subnet(text: &str) -> Ipv4Subnet {
    text.parse().expect("subnet")
}

#[test]
fn networks_get_the_pools_cuts_in_order_and_vxlan_ids_from_4096() {
    let mut cluster = StateLog::new();
    let front = cluster.network("front", None).expect("front");
    let back = cluster.network("back", None).expect("back");
    assert_eq!(front.allocation.subnet, subnet("10.0.0.0/24"));
    assert_eq!(front.allocation.gateway, Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(back.allocation.subnet, subnet("10.0.1.0/24"));
    assert_eq!(
        (front.allocation.vxlan_id, back.allocation.vxlan_id),
        (4096, 4097)
    );
    // A given subnet inside the pool is skipped by the next automatic one.
    let own = cluster.network("own", Some("10.0.2.0/23")).expect("own");
    assert_eq!(own.allocation.subnet, subnet("10.0.2.0/23"));
    let next = cluster.network("next", None).expect("next");
    assert_eq!(next.allocation.subnet, subnet("10.0.4.0/24"));
}

#[test]
fn bad_subnets_are_refused_naming_the_flag() {
    let mut cluster = StateLog::new();
    cluster
        .network("front", Some("10.0.1.0/24"))
        .expect("front");
    let overlap = cluster
        .network("other", Some("10.0.0.0/16"))
        .expect_err("overlap");
    assert_eq!(
        overlap.to_string(),
        "--subnet 10.0.0.0/16 overlaps network front's subnet 10.0.1.0/24"
    );
    let outside = cluster
        .network("other", Some("192.168.5.0/24"))
        .expect_err("outside");
    assert!(
        outside.to_string().starts_with(
            "--subnet 192.168.5.0/24 is outside the cluster's address pool 10.0.0.0/8"
        ),
        "{outside}"
    );
    let spec = NetworkSpec {
        name: "gw".to_string(),
        subnet: Some(subnet("10.9.0.0/24")),
        gateway: Some(Ipv4Addr::new(10, 9, 1, 1)),
        ..NetworkSpec::default()
    };
    let gateway = allocate_network(&cluster.state, &spec).expect_err("gateway");
    assert_eq!(
        gateway.to_string(),
        "--gateway 10.9.1.1 is not a host address of subnet 10.9.0.0/24"
    );
}

#[test]
fn a_full_pool_says_so() {
    let mut cluster = StateLog::new();
    cluster
        .state
        .cluster
        .as_mut()
        .expect("cluster")
        .address_pool
        .pools = vec![subnet("10.5.0.0/23")];
    cluster.network("a", None).expect("a");
    cluster.network("b", None).expect("b");
    let full = cluster.network("c", None).expect_err("full");
    assert!(matches!(full, AllocError::PoolExhausted { .. }), "{full}");
}

#[test]
fn every_task_and_virtual_ip_gets_its_own_address() {
    let mut cluster = StateLog::new();
    let front = cluster.network("front", None).expect("front");
    let web = cluster.service("web", 3, &["front"]);
    let api = cluster.service("api", 2, &["front"]);
    cluster.pass();
    let mut seen = BTreeSet::new();
    seen.insert(front.allocation.gateway);
    for id in ["web-1", "web-2", "web-3", "api-1", "api-2"] {
        let task = cluster.task(id);
        assert_eq!(task.networks.len(), 1, "{id}");
        assert_eq!(task.networks[0].network, "front");
        assert!(front.allocation.subnet.is_host(task.networks[0].address));
        assert!(seen.insert(task.networks[0].address), "{id} twice");
    }
    for service in [&web, &api] {
        let service = cluster.state.service_by_id(&service.id).expect("service");
        assert_eq!(service.virtual_ips.len(), 1);
        assert!(seen.insert(service.virtual_ips[0].address), "vip twice");
    }
    // Nothing more to do on the next pass.
    let mut commands = Vec::new();
    allocate(&cluster.state, Timestamp(99), &mut commands);
    assert_eq!(commands, vec![]);
}

#[test]
fn an_ended_task_gives_its_address_back() {
    let mut cluster = StateLog::new();
    cluster
        .network("front", Some("10.0.1.0/29"))
        .expect("front");
    cluster.service("web", 1, &["front"]);
    let before = cluster.state.addresses_held("net-front");
    let address = cluster.task("web-1").networks[0].address;
    cluster
        .apply(vec![Command::UpdateTaskStatus {
            id: "web-1".to_string(),
            status: TaskStatus::new(TaskState::Failed, Timestamp(5), "exit 1"),
        }])
        .expect("failed");
    assert_eq!(cluster.state.addresses_held("net-front"), before - 1);
    assert_eq!(cluster.state.address_holder("net-front", address), None);
    // A snapshot restored holds the same addresses.
    let mut restored: ClusterState =
        serde_json::from_str(&serde_json::to_string(&cluster.state).expect("encode"))
            .expect("decode");
    restored.rebuild_indexes();
    assert_eq!(restored.addresses_held("net-front"), before - 1);
}

#[test]
fn a_task_that_finds_no_room_waits_saying_which_network_is_full_and_gets_an_address_later() {
    let mut cluster = StateLog::new();
    // A /29: six hosts, the gateway and the virtual IP among them: room for four tasks.
    cluster
        .network("small", Some("10.0.1.0/29"))
        .expect("small");
    let service = cluster.service("web", 5, &["small"]);
    cluster.pass();
    let waiting: Vec<&Task> = cluster
        .state
        .tasks()
        .filter(|t| needs_addresses(t))
        .collect();
    assert_eq!(waiting.len(), 1, "one task waits");
    assert_eq!(
        waiting[0].status.message,
        "no free address on network small (10.0.1.0/29)"
    );
    let waiting_id = waiting[0].id.clone();
    let room = check_room(&cluster.state, &service.spec, Some(&service)).expect_err("full");
    assert!(
        matches!(
            room,
            AllocError::NoRoom {
                free: 0,
                needed: 1,
                ..
            }
        ),
        "{room}"
    );

    let done = cluster
        .state
        .tasks()
        .find(|t| !t.networks.is_empty())
        .expect("an allocated task")
        .id
        .clone();
    cluster
        .apply(vec![Command::RemoveTask { id: done }])
        .expect("removed");
    cluster.pass();
    assert_eq!(cluster.task(&waiting_id).networks.len(), 1);
}

#[test]
fn the_state_refuses_an_address_held_by_another() {
    let mut cluster = StateLog::new();
    cluster.network("front", None).expect("front");
    let service = cluster.service("web", 1, &["front"]);
    let mut copy = testing::task("web-9", &service, 9);
    copy.networks = cluster.task("web-1").networks.clone();
    let refused = cluster.apply(vec![Command::CreateTask { task: copy }]);
    assert!(
        matches!(&refused, Err(StateError::Invalid(m)) if m.contains("is taken")),
        "{refused:?}"
    );
}

#[test]
fn a_network_in_use_cannot_be_removed_and_names_its_users() {
    let mut cluster = StateLog::new();
    cluster.network("front", None).expect("front");
    cluster.service("web", 1, &["front"]);
    let refused = cluster.apply(vec![Command::RemoveNetwork {
        id: "net-front".to_string(),
    }]);
    assert_eq!(
        refused.expect_err("in use").to_string(),
        "network front is in use by service web"
    );
    // The service gone, its task still stopping holds its address.
    cluster
        .apply(vec![Command::RemoveService {
            id: "svc-web".to_string(),
            expected_version: None,
        }])
        .expect("service removed");
    let refused = cluster.apply(vec![Command::RemoveNetwork {
        id: "net-front".to_string(),
    }]);
    assert_eq!(
        refused.expect_err("in use").to_string(),
        "network front is in use by task web.1 (stopping)"
    );
    cluster
        .apply(vec![Command::RemoveTask {
            id: "web-1".to_string(),
        }])
        .expect("task removed");
    cluster
        .apply(vec![Command::RemoveNetwork {
            id: "net-front".to_string(),
        }])
        .expect("network removed");
    assert!(cluster.state.network("front").is_err());
}

#[test]
fn check_room_names_unknown_networks_with_a_suggestion() {
    let mut cluster = StateLog::new();
    cluster.network("front", None).expect("front");
    let mut spec =
        testing::service(ServiceMode::Replicated { replicas: 1 }, TaskSpec::default()).spec;
    spec.task.networks = vec![NetworkAttachmentConfig {
        target: "frnt".to_string(),
        aliases: vec![],
    }];
    let error = check_room(&cluster.state, &spec, None).expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "--network: network \"frnt\" not found; did you mean \"front\"?"
    );
}

#[test]
fn a_dnsrr_service_has_no_virtual_ip_and_a_switch_to_vip_gets_one() {
    let mut cluster = StateLog::new();
    cluster.network("front", None).expect("front");
    cluster.service("web", 1, &["front"]);
    let vip = cluster
        .state
        .service("web")
        .expect("web")
        .virtual_ips
        .clone();
    assert_eq!(vip.len(), 1);
    let mut spec = cluster.state.service("web").expect("web").spec.clone();
    spec.endpoint_mode = EndpointMode::Dnsrr;
    cluster
        .apply(vec![Command::UpdateService {
            id: "svc-web".to_string(),
            expected_version: None,
            spec,
            update_status: None,
        }])
        .expect("update");
    cluster.pass();
    assert!(cluster
        .state
        .service("web")
        .expect("web")
        .virtual_ips
        .is_empty());
    assert_eq!(
        cluster.state.address_holder("net-front", vip[0].address),
        None
    );
}
