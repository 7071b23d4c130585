//! The data plane against the real kernel: two "nodes", each a network namespace, joined by an
//! underlay veth pair; a task namespace on each; the overlay between them carries TCP.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use essaim_network::netns;
use essaim_network::{DataPlane, LocalEndpoint, NetworkPlan, NodePlan, RemoteEndpoint};

/// The namespaces of one test, deleted when it ends, also when it fails. Deleting a node's
/// namespace takes its devices with it.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn create(&mut self, name: String) -> PathBuf {
        let _ = netns::delete(&name);
        let path = netns::create(&name).expect("create a namespace");
        self.names.push(name);
        path
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = netns::delete(name);
        }
    }
}

fn is_root() -> bool {
    let id = Command::new("id").arg("-u").output().expect("run id");
    String::from_utf8_lossy(&id.stdout).trim() == "0"
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}

const UNDERLAY_1: Ipv4Addr = Ipv4Addr::new(192, 168, 231, 1);
const UNDERLAY_2: Ipv4Addr = Ipv4Addr::new(192, 168, 231, 2);
const TASK_1: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
const TASK_2: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 3);

fn plan(
    underlay_ip: Ipv4Addr,
    task: Ipv4Addr,
    task_netns: PathBuf,
    remote: Ipv4Addr,
    remote_node: Ipv4Addr,
) -> NodePlan {
    let mut network = NetworkPlan::new(
        "kerneltestnet0001",
        4242,
        "10.231.0.0/24".parse().expect("a subnet"),
    );
    network.local_endpoints.push(LocalEndpoint {
        key: format!("task-{task}"),
        address: task,
        netns: task_netns,
        ifname: "eth0".into(),
        default_route: true,
    });
    network.remote_endpoints.push(RemoteEndpoint {
        address: remote,
        node_underlay_ip: remote_node,
    });
    NodePlan {
        underlay_ip,
        networks: vec![network],
    }
}

/// Two nodes and a task namespace on each, the underlay up between the nodes.
fn two_nodes(namespaces: &mut Namespaces, tag: &str) -> [PathBuf; 4] {
    let pid = std::process::id();
    let node_1 = format!("es-kt-{pid}-{tag}-n1");
    let node_2 = format!("es-kt-{pid}-{tag}-n2");
    let paths = [
        namespaces.create(node_1.clone()),
        namespaces.create(node_2.clone()),
        namespaces.create(format!("es-kt-{pid}-{tag}-t1")),
        namespaces.create(format!("es-kt-{pid}-{tag}-t2")),
    ];
    ip(&[
        "-n", &node_1, "link", "add", "under0", "type", "veth", "peer", "name", "under0", "netns",
        &node_2,
    ]);
    for (node, address) in [(&node_1, UNDERLAY_1), (&node_2, UNDERLAY_2)] {
        ip(&[
            "-n",
            node,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "under0",
        ]);
        ip(&["-n", node, "link", "set", "under0", "up"]);
        ip(&["-n", node, "link", "set", "lo", "up"]);
    }
    paths
}

/// Listens in `server_netns` on `address`, connects from `client_netns`, and returns what the
/// server answered.
fn exchange(server_netns: &Path, client_netns: &Path, address: Ipv4Addr) -> String {
    let target = SocketAddr::from((address, 7070));
    let listener = netns::run_in(server_netns, move || TcpListener::bind(target))
        .expect("exchange")
        .expect("exchange");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("exchange");
        let mut question = [0u8; 4];
        stream.read_exact(&mut question).expect("exchange");
        stream.write_all(b"pong").expect("exchange");
    });
    let mut stream = netns::run_in(client_netns, move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(5))
    })
    .expect("exchange")
    .expect("exchange");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("exchange");
    stream.write_all(b"ping").expect("exchange");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("exchange");
    server.join().expect("exchange");
    answer
}

fn essaim_links(state: &essaim_network::KernelState) -> Vec<String> {
    state
        .links
        .keys()
        .filter(|name| name.starts_with("es-"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn tasks_on_two_nodes_talk_over_the_overlay_and_leave_nothing_behind() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let mut namespaces = Namespaces { names: Vec::new() };
    let [node_1, node_2, task_1, task_2] = two_nodes(&mut namespaces, "talk");
    let plane_1 = DataPlane::in_namespace(&node_1).unwrap();
    let plane_2 = DataPlane::in_namespace(&node_2).unwrap();
    let plan_1 = plan(UNDERLAY_1, TASK_1, task_1.clone(), TASK_2, UNDERLAY_2);
    let plan_2 = plan(UNDERLAY_2, TASK_2, task_2.clone(), TASK_1, UNDERLAY_1);

    let made = plane_1.reconcile(&plan_1).await.unwrap();
    assert!(!made.is_empty());
    plane_2.reconcile(&plan_2).await.unwrap();

    assert_eq!(exchange(&task_2, &task_1, TASK_2), "pong");
    assert_eq!(exchange(&task_1, &task_2, TASK_1), "pong");

    // What is made stays made: a second pass finds nothing to do.
    assert_eq!(plane_1.reconcile(&plan_1).await.unwrap().applied, vec![]);
    assert_eq!(plane_2.reconcile(&plan_2).await.unwrap().applied, vec![]);

    plane_1.remove_all().await.unwrap();
    plane_2.remove_all().await.unwrap();
    assert_eq!(
        essaim_links(&plane_1.observe().await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        essaim_links(&plane_2.observe().await.unwrap()),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_broken_endpoint_is_made_again_and_foreign_devices_are_left_alone() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let mut namespaces = Namespaces { names: Vec::new() };
    let [node_1, node_2, task_1, task_2] = two_nodes(&mut namespaces, "mend");
    let name_1 = namespaces.names[0].clone();
    let plane_1 = DataPlane::in_namespace(&node_1).unwrap();
    let plane_2 = DataPlane::in_namespace(&node_2).unwrap();
    let plan_1 = plan(UNDERLAY_1, TASK_1, task_1.clone(), TASK_2, UNDERLAY_2);
    let plan_2 = plan(UNDERLAY_2, TASK_2, task_2.clone(), TASK_1, UNDERLAY_1);
    plane_1.reconcile(&plan_1).await.unwrap();
    plane_2.reconcile(&plan_2).await.unwrap();

    // Someone takes the bridge down and adds a device of their own.
    let bridge = essaim_network::plan::bridge_name(4242);
    ip(&["-n", &name_1, "link", "set", &bridge, "down"]);
    ip(&["-n", &name_1, "link", "add", "theirs0", "type", "bridge"]);

    let mended = plane_1.reconcile(&plan_1).await.unwrap();
    assert!(!mended.is_empty());
    assert_eq!(exchange(&task_2, &task_1, TASK_2), "pong");

    plane_1.remove_all().await.unwrap();
    let left = plane_1.observe().await.unwrap();
    assert!(
        left.links.contains_key("theirs0"),
        "{:?}",
        left.links.keys()
    );
    assert_eq!(essaim_links(&left), Vec::<String>::new());
}
