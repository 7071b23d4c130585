//! The manager's in-process tier: real nodes (Raft with its log on disk in a temporary
//! directory, real gRPC on loopback between them), driven through their own entry points in
//! one test process, with simulated tasks. Faster than the end-to-end tests, which spawn
//! `essaimd` processes, and able to look inside: the leader's liveness, its applied state.
//! `docs/testing.md` says which tier proves what.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use essaim_api::control::NodeInfo;
use essaim_api::pb::JoinRequest;
use essaim_api::tls::CertRole;
use essaim_api::{ControlError, ControlReply, ControlRequest};
use essaim_core::liveness::NodeTrust;
use essaim_core::model::{NodeState, ServiceMode, ServiceSpec, TaskSpec, TaskState};
use essaim_manager::clock::Clock;
use essaim_manager::replica::raft::RaftTimings;
use essaim_manager::security::ca;
use essaim_manager::{servers, Node, NodeConfig};
use essaim_worker::Runtime;
use tokio::sync::oneshot;

/// How long any awaited condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// A node serving both doors on loopback, stopped (and its directory removed) when dropped.
struct TestNode {
    node: Arc<Node>,
    addr: String,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    async fn start(hostname: &str) -> TestNode {
        let dir = tempfile::tempdir().expect("temporary directory");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback port");
        let addr = listener.local_addr().expect("address").to_string();
        let socket = essaim_api::transport::bind_local_socket(&dir.path().join("essaim.sock"))
            .expect("local socket");
        let node = Node::start(NodeConfig {
            data_dir: dir.path().join("data"),
            advertise_addr: addr.clone(),
            hostname: hostname.to_string(),
            raft_timings: RaftTimings::default(),
            runtime: Runtime::Sim {
                start_delay: Duration::from_millis(10),
            },
            generic_resources: Default::default(),
            clock: Clock::system(),
        })
        .await
        .expect("node starts");
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(servers::serve(node.clone(), listener, socket, async {
            let _ = stopped.await;
        }));
        TestNode {
            node,
            addr,
            stop: Some(stop),
            _dir: dir,
        }
    }

    /// A request as the local socket's `essaim` sends it.
    async fn ask(&self, request: ControlRequest) -> Result<ControlReply, ControlError> {
        self.node.dispatch(request, true, false).await
    }

    async fn init(&self) {
        let reply = self
            .ask(ControlRequest::SwarmInit {
                advertise_addr: None,
                address_pool: None,
            })
            .await
            .expect("swarm init");
        assert!(
            matches!(reply, ControlReply::Initialized { .. }),
            "{reply:?}"
        );
    }

    async fn info(&self) -> NodeInfo {
        match self.ask(ControlRequest::Info).await.expect("info") {
            ControlReply::Info(info) => info,
            other => panic!("info answered {other:?}"),
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits until `check` gives a value, or fails the test naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn service(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        mode: ServiceMode::Replicated { replicas },
        labels: Default::default(),
        task: TaskSpec {
            image: "sleep".to_string(),
            ..Default::default()
        },
        ports: Vec::new(),
        update_config: Default::default(),
        rollback_config: Default::default(),
        endpoint_mode: Default::default(),
    }
}

async fn running_tasks(node: &TestNode, service: &str) -> Option<usize> {
    let reply = node
        .ask(ControlRequest::TaskList {
            service: Some(service.to_string()),
            node: None,
        })
        .await
        .ok()?;
    let ControlReply::Tasks(tasks) = reply else {
        return None;
    };
    Some(
        tasks
            .iter()
            .filter(|t| {
                t.task.status.state == TaskState::Running
                    && t.task.desired_state == TaskState::Running
            })
            .count(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_api_creates_scales_and_refuses_in_the_words_a_user_reads() {
    let node = TestNode::start("solo").await;
    let before = node.ask(ControlRequest::ServiceList).await;
    assert!(
        matches!(&before, Err(ControlError::FailedPrecondition(m)) if m.contains("not part of a swarm")),
        "{before:?}"
    );
    let remote_init = node
        .node
        .dispatch(
            ControlRequest::SwarmInit {
                advertise_addr: None,
                address_pool: None,
            },
            false,
            false,
        )
        .await;
    assert!(
        matches!(remote_init, Err(ControlError::PermissionDenied(_))),
        "{remote_init:?}"
    );
    node.init().await;

    node.ask(ControlRequest::ServiceCreate {
        spec: service("web", 2),
    })
    .await
    .expect("service create");
    eventually("2 running tasks", || async {
        (running_tasks(&node, "web").await == Some(2)).then_some(())
    })
    .await;
    node.ask(ControlRequest::ServiceScale {
        service: "web".into(),
        replicas: 5,
    })
    .await
    .expect("service scale");
    eventually("5 running tasks", || async {
        (running_tasks(&node, "web").await == Some(5)).then_some(())
    })
    .await;

    let unknown = node
        .ask(ControlRequest::ServiceScale {
            service: "nope".into(),
            replicas: 1,
        })
        .await;
    assert!(
        matches!(&unknown, Err(ControlError::NotFound(m)) if m.contains("nope")),
        "{unknown:?}"
    );
    let taken = node
        .ask(ControlRequest::ServiceCreate {
            spec: service("web", 1),
        })
        .await;
    assert!(matches!(taken, Err(ControlError::Conflict(_))), "{taken:?}");

    let ControlReply::Nodes(nodes) = node.ask(ControlRequest::NodeList).await.expect("node ls")
    else {
        panic!("node ls answered something else");
    };
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].manager_status.as_ref().is_some_and(|m| m.leader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_tasks_are_rejected_says_why() {
    let node = TestNode::start("solo").await;
    node.init().await;
    let mut spec = service("broken", 1);
    // The sim runtime refuses such a task at start, as Docker refuses a missing image.
    spec.task
        .env
        .insert("SIM_REJECT".into(), "image nope:1 not found".into());
    node.ask(ControlRequest::ServiceCreate { spec })
        .await
        .expect("service create");
    let problem = eventually("the service to say why it runs nothing", || async {
        let Ok(ControlReply::Services(services)) = node.ask(ControlRequest::ServiceList).await
        else {
            return None;
        };
        services
            .into_iter()
            .find(|s| s.service.spec.name == "broken")
            .filter(|s| s.running == 0 && s.desired == 1)
            .and_then(|s| s.problem)
            // Before its node is ready, the task may wait with another reason.
            .filter(|p| p.starts_with("rejected: "))
    })
    .await;
    assert!(problem.contains("image nope:1 not found"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_goes_down_and_comes_back_with_its_heartbeat() {
    let node = TestNode::start("leader").await;
    node.init().await;
    // Short heartbeats, so that down comes quickly.
    node.ask(ControlRequest::SwarmUpdate {
        cert_expiry_ms: None,
        heartbeat_period_ms: Some(100),
        task_history_limit: None,
    })
    .await
    .expect("swarm update");
    let swarm = node.node.in_swarm().expect("in a swarm");
    // A worker joins with the real token, and then says nothing.
    let ControlReply::JoinToken { token, .. } = node
        .ask(ControlRequest::JoinToken {
            role: essaim_core::model::Role::Worker,
            rotate: false,
        })
        .await
        .expect("join token")
    else {
        panic!("join-token answered something else");
    };
    let (_key, csr_pem) = ca::new_key_and_request().expect("key");
    let joined = swarm
        .membership
        .join(JoinRequest {
            token,
            hostname: "quiet".into(),
            addr: "127.0.0.1:1".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            csr_pem,
            nano_cpus: 1_000_000_000,
            memory_bytes: 1 << 30,
            runtime: "sim".into(),
            generic_resources: Vec::new(),
        })
        .await
        .expect("join");
    let status_of = || {
        swarm
            .replica
            .state()
            .node_by_id(&joined.node_id)
            .map(|n| n.status.clone())
    };
    let down = eventually("the silent node down", || async {
        status_of().filter(|s| s.state == NodeState::Down)
    })
    .await;
    assert!(down.message.contains("heartbeat failure"), "{down:?}");

    swarm
        .membership
        .heartbeat(&joined.node_id, CertRole::Worker, NodeTrust::default())
        .expect("heartbeat accepted");
    eventually("the node ready again", || async {
        status_of().filter(|s| s.state == NodeState::Ready)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_passes_control_requests_to_the_leader_once() {
    let leader = TestNode::start("one").await;
    leader.init().await;
    let ControlReply::JoinToken { token, .. } = leader
        .ask(ControlRequest::JoinToken {
            role: essaim_core::model::Role::Manager,
            rotate: false,
        })
        .await
        .expect("join token")
    else {
        panic!("join-token answered something else");
    };
    let follower = TestNode::start("two").await;
    follower
        .ask(ControlRequest::SwarmJoin {
            token,
            remote_addr: leader.addr.clone(),
            advertise_addr: None,
        })
        .await
        .expect("join as manager");
    let leader_id = leader.info().await.node_id;
    assert_eq!(follower.info().await.leader_id, leader_id);

    // Asked of the follower, answered by the leader: the leader's state has it.
    follower
        .ask(ControlRequest::ServiceCreate {
            spec: service("api", 1),
        })
        .await
        .expect("service create through the follower");
    let leader_swarm = leader.node.in_swarm().expect("in a swarm");
    assert!(leader_swarm.replica.state().service("api").is_ok());

    // A request already passed on once is not passed again.
    let twice = follower
        .node
        .dispatch(ControlRequest::ServiceList, true, true)
        .await;
    assert!(
        matches!(&twice, Err(ControlError::Unavailable(m)) if m.contains("leadership moved")),
        "{twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_a_network_gets_an_address_per_task_and_a_virtual_ip() {
    use essaim_core::model::{NetworkAttachmentConfig, NetworkSpec};
    let node = TestNode::start("solo").await;
    node.init().await;
    let network = |name: &str, subnet: Option<&str>| ControlRequest::NetworkCreate {
        spec: NetworkSpec {
            name: name.to_string(),
            subnet: subnet.map(|s| s.parse().expect("subnet")),
            ..NetworkSpec::default()
        },
    };
    let ControlReply::Network(front) = node
        .ask(network("front", Some("10.0.7.0/24")))
        .await
        .expect("network create")
    else {
        panic!("network create answered something else");
    };
    assert_eq!(front.network.allocation.vxlan_id, 4096);
    let overlap = node.ask(network("other", Some("10.0.0.0/16"))).await;
    assert!(
        matches!(&overlap, Err(ControlError::InvalidArgument(m)) if m.contains("overlaps network front")),
        "{overlap:?}"
    );
    let taken = node.ask(network("front", None)).await;
    assert!(matches!(taken, Err(ControlError::Conflict(_))), "{taken:?}");

    let mut spec = service("web", 3);
    spec.task.networks = vec![NetworkAttachmentConfig {
        target: "frnt".to_string(),
        aliases: vec![],
    }];
    let unknown = node
        .ask(ControlRequest::ServiceCreate { spec: spec.clone() })
        .await;
    assert!(
        matches!(&unknown, Err(ControlError::NotFound(m)) if m.contains("did you mean \"front\"")),
        "{unknown:?}"
    );
    spec.task.networks[0].target = "front".to_string();
    node.ask(ControlRequest::ServiceCreate { spec })
        .await
        .expect("service create");
    let addresses = eventually("three running tasks with addresses on front", || async {
        let Ok(ControlReply::Tasks(tasks)) = node
            .ask(ControlRequest::TaskList {
                service: Some("web".into()),
                node: None,
            })
            .await
        else {
            return None;
        };
        let running: Vec<_> = tasks
            .iter()
            .filter(|t| t.task.status.state == TaskState::Running)
            .filter_map(|t| t.task.networks.first().map(|a| a.address))
            .collect();
        (running.len() == 3).then_some(running)
    })
    .await;
    let ControlReply::Service(web) = node
        .ask(ControlRequest::ServiceInspect {
            service: "web".into(),
        })
        .await
        .expect("inspect")
    else {
        panic!("inspect answered something else");
    };
    let vip = web
        .service
        .virtual_ips
        .first()
        .expect("a virtual IP")
        .address;
    let mut all = addresses.clone();
    all.push(vip);
    all.push(front.network.allocation.gateway);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 5, "no address twice: {addresses:?}, vip {vip}");
    let subnet = front.network.allocation.subnet;
    assert!(
        all.iter().all(|a| subnet.contains(*a)),
        "{all:?} in {subnet}"
    );

    let in_use = node
        .ask(ControlRequest::NetworkRemove {
            network: "front".into(),
        })
        .await;
    assert!(
        matches!(&in_use, Err(ControlError::FailedPrecondition(m)) if m == "network front is in use by service web"),
        "{in_use:?}"
    );
    node.ask(ControlRequest::ServiceRemove {
        service: "web".into(),
    })
    .await
    .expect("service rm");
    // Once the tasks have stopped and let their addresses go, the network can go.
    eventually("the network to be removed", || async {
        node.ask(ControlRequest::NetworkRemove {
            network: "front".into(),
        })
        .await
        .ok()
    })
    .await;
    let ControlReply::Networks(left) = node.ask(ControlRequest::NetworkList).await.expect("ls")
    else {
        panic!("network ls answered something else");
    };
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_small_writes_share_entries_and_each_gets_its_own_result() {
    let node = TestNode::start("leader").await;
    node.init().await;
    let swarm = node.node.in_swarm().expect("in a swarm");
    let replica = swarm.replica.clone();
    let writes = (0..64).map(|i| {
        let replica = replica.clone();
        async move {
            // Every other one is refused (the same lock for two holders): a refusal is its
            // caller's alone.
            let name = format!("lock-{}", i / 2);
            replica
                .write_one(essaim_core::Command::AcquireLock {
                    name,
                    holder: format!("holder-{i}"),
                    ttl_ms: 60_000,
                })
                .await
        }
    });
    let results = futures::future::join_all(writes).await;
    let accepted: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    assert_eq!(accepted.len(), 32, "{results:?}");
    let refused = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(refused, 32, "{results:?}");
    // A command's version is its entry's index: 64 writes took far fewer entries.
    let entries: std::collections::BTreeSet<u64> = accepted.iter().copied().collect();
    assert!(
        entries.len() < 32,
        "{} entries for 32 accepted writes",
        entries.len()
    );
}
