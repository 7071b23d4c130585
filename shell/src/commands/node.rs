//! `essaim node ...`: list, inspect, update, promote, demote and remove the swarm's nodes.

use essaim_api::control::NodeView;
use essaim_core::model::Role;

use super::Failures;
use crate::cli::{
    Format, NodeCommand, NodeInspectArgs, NodeLsArgs, NodePsArgs, NodeRmArgs, NodeUpdateArgs,
    NodesArgs,
};
use crate::client::{Client, NodeChanges};
use crate::render::{self, Output};

/// # Errors
/// The daemon could not be reached, the leader refused, or (with several NODE arguments) at
/// least one of them failed.
pub async fn run(
    command: NodeCommand,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls(args) => ls(args, client, output).await,
        NodeCommand::Inspect(args) => inspect(args, client, output).await,
        NodeCommand::Update(args) => update(args, client, output).await,
        NodeCommand::Promote(args) => change_role(args, Role::Manager, client, output).await,
        NodeCommand::Demote(args) => {
            if !args.yes && output.interactive {
                let mut plan = Vec::new();
                let managers = count_managers(client).await;
                for name in &args.nodes.nodes {
                    if let Ok(view) = client.node_inspect(name).await {
                        if view.node.spec.role == Role::Manager {
                            plan.push(format!(
                                "demote manager {} to a worker (managers: {} -> {})",
                                view.node.description.hostname,
                                managers,
                                managers.saturating_sub(plan.len() + 1)
                            ));
                        }
                    }
                }
                crate::confirm::go_ahead(&plan, output)?;
            }
            change_role(args.nodes, Role::Worker, client, output).await
        }
        NodeCommand::Rm(args) => rm(args, client, output).await,
        NodeCommand::Ps(args) => ps(args, client, output).await,
    }
}

async fn ps(args: NodePsArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    let tasks = client.task_list(None, Some(&args.node)).await?;
    output.print(&super::service::tasks_text(&tasks, &args.ps, false)?)?;
    Ok(())
}

async fn ls(args: NodeLsArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    let mut nodes = client.node_list().await?;
    sort(&mut nodes);
    let text = if args.quiet {
        render::ids(nodes.iter().map(|view| view.node.id.as_str()))
    } else {
        match args.format {
            Format::Json => render::json(&nodes)?,
            Format::Table => {
                // Only for the `*` marker: a list without it beats no list, so a failure here
                // is not the command's.
                let local = client.info().await.ok().and_then(|info| info.node_id);
                render::node_table(&nodes, local.as_deref())
            }
        }
    };
    output.print(&text)?;
    Ok(())
}

/// The order `node ls` shows: by hostname, then by ID for hosts with the same name.
fn sort(nodes: &mut [NodeView]) {
    let key = |view: &NodeView| (view.node.description.hostname.clone(), view.node.id.clone());
    nodes.sort_by_cached_key(key);
}

async fn inspect(
    args: NodeInspectArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let pretty = args.pretty || args.format == Format::Table;
    let mut failures = Failures::default();
    let mut views = Vec::new();
    for name in &args.nodes {
        match client.node_inspect(name).await {
            Ok(view) => views.push(view),
            Err(error) => failures.report(output, error.into()),
        }
    }
    let text = super::inspected(&views, pretty, render::node_pretty)?;
    output.print(&text)?;
    failures.finish()
}

async fn update(
    args: NodeUpdateArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let read = client.node_inspect(&args.node).await?;
    let changes = NodeChanges {
        availability: args.availability,
        role: args.role,
        label_add: args.label_add.into_iter().collect(),
        label_rm: args.label_rm,
    };
    client.node_update(&read, changes, None).await?;
    output.print(&format!("{}\n", read.node.id))?;
    Ok(())
}

async fn change_role(
    args: NodesArgs,
    role: Role,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    for name in &args.nodes {
        match set_role(client, name, role).await {
            Ok(message) => output.print(&message)?,
            Err(error) => failures.report(output, error),
        }
    }
    failures.finish()
}

/// Promotes or demotes one node, and says what happened.
async fn set_role(client: &mut Client, name: &str, role: Role) -> anyhow::Result<String> {
    let read = client.node_inspect(name).await?;
    if read.node.spec.role == role {
        return Ok(format!("Node {name} is already a {role}.\n"));
    }
    let changes = NodeChanges {
        role: Some(role),
        ..NodeChanges::default()
    };
    client.node_update(&read, changes, None).await?;
    Ok(match role {
        Role::Manager => format!("Node {name} promoted to a manager in the swarm.\n"),
        Role::Worker => format!("Manager {name} demoted in the swarm.\n"),
    })
}

/// How many managers the swarm has, for the plan of a demotion (0 if it cannot be told).
async fn count_managers(client: &mut Client) -> usize {
    client
        .node_list()
        .await
        .map_or(0, |nodes| crate::repl::cache::Managers::of(&nodes).total)
}

async fn rm(args: NodeRmArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    if !args.yes && output.interactive {
        let mut plan = Vec::new();
        for name in &args.nodes {
            if let Ok(view) = client.node_inspect(name).await {
                plan.push(format!(
                    "remove node {} ({}, {}); its tasks are started elsewhere",
                    view.node.description.hostname,
                    view.node.spec.role.as_str(),
                    view.node.status.state.as_str()
                ));
            }
        }
        crate::confirm::go_ahead(&plan, output)?;
    }
    let mut failures = Failures::default();
    for name in &args.nodes {
        match client.node_remove(name, args.force).await {
            Ok(()) => output.print(&format!("{name}\n"))?,
            Err(error) => failures.report(output, error.into()),
        }
    }
    failures.finish()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use essaim_api::{ControlError, ControlReply, ControlRequest};
    use essaim_core::model::{
        Availability, Node, NodeDescription, NodeSpec, NodeState, NodeStatus,
    };
    use essaim_core::Timestamp;

    use super::*;

    use crate::commands::run_line;
    use crate::{Exit, Reported};

    fn worker(id: &str, hostname: &str) -> NodeView {
        NodeView {
            node: Node {
                id: id.to_string(),
                version: 12,
                created_at: Timestamp(0),
                updated_at: Timestamp(0),
                raft_id: 2,
                ingress: None,
                spec: NodeSpec {
                    role: Role::Worker,
                    availability: Availability::Active,
                    labels: BTreeMap::new(),
                },
                description: NodeDescription {
                    hostname: hostname.to_string(),
                    ..NodeDescription::default()
                },
                status: NodeStatus {
                    state: NodeState::Ready,
                    message: String::new(),
                },
            },
            manager_status: None,
        }
    }

    /// A daemon that knows the workers `w1` (ID `id-w1`) and `w2`, records every request, and
    /// reports an unreachable leader for any other node name.
    fn fake_daemon() -> (Client, Rc<RefCell<Vec<ControlRequest>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let seen = Rc::clone(&log);
        let client = Client::from_fn(move |request| {
            seen.borrow_mut().push(request.clone());
            let reply = match &request {
                ControlRequest::NodeInspect { node } if node == "w1" || node == "w2" => {
                    Ok(ControlReply::Node(worker(&format!("id-{node}"), node)))
                }
                ControlRequest::NodeInspect { node } => {
                    Err(ControlError::NoQuorum(format!("cannot look up {node}")))
                }
                ControlRequest::NodeUpdate { .. } | ControlRequest::NodeRemove { .. } => {
                    Ok(ControlReply::Done)
                }
                ControlRequest::NodeList => Ok(ControlReply::Nodes(vec![
                    worker("id-b", "w2"),
                    worker("id-a", "w1"),
                ])),
                _ => Err(ControlError::Internal("not faked".to_string())),
            };
            Box::pin(async move { reply })
        });
        (client, log)
    }

    #[test]
    fn update_sends_the_version_it_read_and_the_labels() {
        let (mut client, log) = fake_daemon();
        let (out, err, result) = run_line(
            &mut client,
            &[
                "essaim",
                "node",
                "update",
                "--availability",
                "drain",
                "--label-add",
                "zone=a",
                "--label-add",
                "ssd",
                "--label-rm",
                "old",
                "w1",
            ],
        );
        assert!(result.is_ok(), "{err}");
        assert_eq!(out, "id-w1\n");
        assert_eq!(
            log.borrow().last(),
            Some(&ControlRequest::NodeUpdate {
                node: "id-w1".to_string(),
                expected_version: None,
                availability: Some(Availability::Drain),
                role: None,
                label_add: BTreeMap::from([
                    ("ssd".to_string(), String::new()),
                    ("zone".to_string(), "a".to_string()),
                ]),
                label_rm: vec!["old".to_string()],
            })
        );
    }

    #[test]
    fn promote_goes_on_past_a_failing_node_and_fails_at_the_end() {
        let (mut client, _) = fake_daemon();
        let (out, err, result) = run_line(
            &mut client,
            &["essaim", "node", "promote", "w1", "ghost", "w2"],
        );
        assert_eq!(
            out,
            "Node w1 promoted to a manager in the swarm.\n\
             Node w2 promoted to a manager in the swarm.\n"
        );
        assert_eq!(err, "Error: no quorum: cannot look up ghost\n");
        let error = result.expect_err("ghost failed");
        // The only failure was a lost quorum, so the exit code says so.
        assert!(matches!(
            error.downcast_ref::<Reported>(),
            Some(Reported(Exit::Unreachable))
        ));
    }

    #[test]
    fn demoting_a_worker_changes_nothing() {
        let (mut client, log) = fake_daemon();
        let (out, _, result) = run_line(&mut client, &["essaim", "node", "demote", "w1"]);
        assert!(result.is_ok());
        assert_eq!(out, "Node w1 is already a worker.\n");
        assert!(!log
            .borrow()
            .iter()
            .any(|request| matches!(request, ControlRequest::NodeUpdate { .. })));
    }

    #[test]
    fn ls_quiet_prints_ids_sorted_by_hostname() {
        let (mut client, _) = fake_daemon();
        let (out, _, result) = run_line(&mut client, &["essaim", "node", "ls", "-q"]);
        assert!(result.is_ok());
        assert_eq!(out, "id-a\nid-b\n");
    }

    #[test]
    fn inspect_prints_a_json_array_of_what_was_found() {
        let (mut client, _) = fake_daemon();
        let (out, err, result) = run_line(&mut client, &["essaim", "node", "inspect", "w2", "x"]);
        assert!(result.is_err());
        assert_eq!(err, "Error: no quorum: cannot look up x\n");
        let parsed: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(parsed[0]["id"], "id-w2");
        assert_eq!(parsed.as_array().map(Vec::len), Some(1));
    }
}
