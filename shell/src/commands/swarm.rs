//! `essaim swarm ...`: create, join, leave, inspect and update the swarm, show its join
//! tokens, and issue client bundles from its CA.

use std::path::Path;

use essaim_api::tls::{self, Credentials};
use essaim_api::{ControlReply, ControlRequest};
use essaim_core::model::{AddressPool, Role};

use crate::bundle;
use crate::cli::{
    CaArgs, CaCommand, Format, InitArgs, IssueClientArgs, JoinArgs, JoinTokenArgs, LeaveArgs,
    SwarmCommand, SwarmInspectArgs, SwarmUpdateArgs,
};
use crate::client::{unexpected, Client, SwarmChanges};
use crate::render::{self, Output};

/// # Errors
/// The daemon could not be reached, or it or the leader refused.
pub async fn run(
    command: SwarmCommand,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        SwarmCommand::Init(args) => init(args, client, output).await,
        SwarmCommand::Join(args) => join(args, client, output).await,
        SwarmCommand::JoinToken(args) => join_token(args, client, output).await,
        SwarmCommand::Leave(args) => leave(args, client, output).await,
        SwarmCommand::Inspect(args) => inspect(args, client, output).await,
        SwarmCommand::Update(args) => update(args, client, output).await,
        SwarmCommand::Ca(CaArgs {
            command: Some(CaCommand::IssueClient(args)),
            ..
        }) => issue_client(args, client, output).await,
        SwarmCommand::Ca(args) => ca(args, client, output).await,
    }
}

async fn init(args: InitArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    let address_pool = (!args.default_addr_pool.is_empty()
        || args.default_addr_pool_mask_length.is_some())
    .then(|| {
        let default = AddressPool::default();
        AddressPool {
            pools: if args.default_addr_pool.is_empty() {
                default.pools
            } else {
                args.default_addr_pool
            },
            mask_length: args
                .default_addr_pool_mask_length
                .unwrap_or(default.mask_length),
        }
    });
    let request = ControlRequest::SwarmInit {
        advertise_addr: args.advertise_addr,
        address_pool,
    };
    match client.call(&request).await? {
        ControlReply::Initialized {
            node_id,
            worker_token,
            manager_addr,
            ..
        } => output.print(&initialized(&node_id, &worker_token, &manager_addr))?,
        other => return Err(unexpected(&request, &other).into()),
    }
    Ok(())
}

/// What `swarm init` says, word for word docker's.
fn initialized(node_id: &str, worker_token: &str, manager_addr: &str) -> String {
    format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n{}\n\
         To add a manager to this swarm, run 'essaim swarm join-token manager' and follow the \
         instructions.\n",
        render::join_instructions(Role::Worker, worker_token, manager_addr)
    )
}

async fn join(args: JoinArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    let request = ControlRequest::SwarmJoin {
        token: args.token,
        remote_addr: args.remote_addr,
        advertise_addr: args.advertise_addr,
    };
    match client.call(&request).await? {
        ControlReply::Joined { role, .. } => {
            output.print(&format!("This node joined a swarm as a {role}.\n"))?;
        }
        other => return Err(unexpected(&request, &other).into()),
    }
    Ok(())
}

async fn join_token(
    args: JoinTokenArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let request = ControlRequest::JoinToken {
        role: args.role,
        rotate: args.rotate,
    };
    let (role, token, manager_addr) = match client.call(&request).await? {
        ControlReply::JoinToken {
            role,
            token,
            manager_addr,
        } => (role, token, manager_addr),
        other => return Err(unexpected(&request, &other).into()),
    };
    let mut text = String::new();
    if args.quiet {
        text.push_str(&token);
        text.push('\n');
    } else {
        if args.rotate {
            text.push_str(&format!("Successfully rotated {role} join token.\n\n"));
        }
        text.push_str(&render::join_instructions(role, &token, &manager_addr));
    }
    output.print(&text)?;
    Ok(())
}

async fn leave(
    args: LeaveArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    if !args.yes && output.interactive {
        let info = client.info().await?;
        if info.is_manager {
            let plan = [format!(
                "take manager {} out of the swarm: the other managers must keep a majority, \
                 and this node forgets the swarm's state",
                info.hostname
            )];
            crate::confirm::go_ahead(&plan, output)?;
        }
    }
    let request = ControlRequest::SwarmLeave { force: args.force };
    match client.call(&request).await? {
        ControlReply::Done => output.print("Node left the swarm.\n")?,
        other => return Err(unexpected(&request, &other).into()),
    }
    Ok(())
}

async fn inspect(
    args: SwarmInspectArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let view = client.swarm_inspect().await?;
    let text = match args.format {
        Format::Json => render::json(&view)?,
        Format::Table => render::swarm(&view),
    };
    output.print(&text)?;
    Ok(())
}

async fn update(
    args: SwarmUpdateArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let changes = SwarmChanges {
        cert_expiry_ms: args.cert_expiry,
        heartbeat_period_ms: args.dispatcher_heartbeat,
        task_history_limit: args.task_history_limit,
    };
    client.swarm_update(changes).await?;
    output.print("Swarm updated.\n")?;
    Ok(())
}

/// How long `swarm ca --rotate` waits for the rotation to finish.
const ROTATION_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Prints the CA certificate, or rotates the CA and waits for every node to move.
async fn ca(args: CaArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    if !args.rotate {
        let view = client.swarm_inspect().await?;
        output.print(&view.ca_cert_pem)?;
        return Ok(());
    }
    let request = ControlRequest::RotateCa;
    let started = match client.call(&request).await? {
        ControlReply::Swarm(view) => view,
        other => return Err(unexpected(&request, &other).into()),
    };
    if args.detach {
        output.print(&format!(
            "CA rotation started ({}); follow it with 'essaim swarm inspect --format table'.\n",
            started.ca_rotation.as_deref().unwrap_or("starting")
        ))?;
        return Ok(());
    }
    let deadline = std::time::Instant::now() + ROTATION_WAIT;
    let mut last_stage = String::new();
    loop {
        let view = client.swarm_inspect().await?;
        match view.ca_rotation {
            None => {
                output.print(&format!(
                    "CA rotated: new CA fingerprint {}\n",
                    view.ca_fingerprint
                ))?;
                return Ok(());
            }
            Some(stage) => {
                if stage != last_stage {
                    output.print(&format!("rotation in progress: {stage}\n"))?;
                    last_stage = stage;
                }
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(crate::TimedOut(format!(
                "the CA rotation has not finished after {}s: nodes that are up but have not \
                 caught up yet hold it back (the leader's log names them); it goes on in the \
                 background: follow it with 'essaim swarm inspect --format table'",
                ROTATION_WAIT.as_secs()
            ))
            .into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Makes a key and a certificate request here, has the swarm's CA sign the request, and
/// writes the bundle: the key never leaves this machine.
async fn issue_client(
    args: IssueClientArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    // Refuse before asking for a certificate that could not be written.
    bundle::prepare(&args.out, args.force)?;
    let name = args.name.unwrap_or_else(default_client_name);
    let (key_pem, csr_pem) = tls::new_key_and_request()?;
    let (cert_pem, roots_pem, manager_addr) = client.issue_client_cert(&name, &csr_pem).await?;
    let credentials = Credentials {
        cert_pem,
        key_pem,
        roots_pem,
    };
    bundle::write(&args.out, &credentials, args.force)?;
    output.print(&bundle_written(&args.out, &manager_addr))?;
    Ok(())
}

/// The name a client certificate is issued to when `--name` is not given: the local user.
fn default_client_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|user| !user.trim().is_empty())
        .unwrap_or_else(|| "operator".to_string())
}

/// What `swarm ca issue-client` says once the bundle is on disk.
fn bundle_written(dir: &Path, manager_addr: &str) -> String {
    let dir = dir.display();
    format!("Client bundle written to {dir}: use it with essaim --tls-dir {dir} -H tcp://{manager_addr}\n")
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use essaim_api::control::SwarmView;
    use essaim_api::ControlError;
    use essaim_core::model::ClusterConfig;
    use essaim_core::Timestamp;

    use super::*;

    use crate::commands::run_line;
    use crate::{Exit, UsageError};

    /// A leader that answers `swarm update` and signs any request, recording every request.
    fn fake_leader() -> (Client, Rc<RefCell<Vec<ControlRequest>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let seen = Rc::clone(&log);
        let client = Client::from_fn(move |request| {
            seen.borrow_mut().push(request.clone());
            let reply = match &request {
                ControlRequest::SwarmUpdate { .. } => Ok(ControlReply::Swarm(SwarmView {
                    id: "c1".to_string(),
                    version: 3,
                    created_at: Timestamp(0),
                    updated_at: Timestamp(0),
                    config: ClusterConfig::default(),
                    ca_fingerprint: String::new(),
                    ca_cert_pem: String::new(),
                    ca_rotation: None,
                    address_pool: Default::default(),
                })),
                ControlRequest::IssueClientCert { name, .. } => Ok(ControlReply::ClientCert {
                    certificate_pem: format!("certificate of {name}\n"),
                    roots_pem: "roots\n".to_string(),
                    manager_addr: "10.0.0.1:4242".to_string(),
                }),
                _ => Err(ControlError::Internal("not faked".to_string())),
            };
            Box::pin(async move { reply })
        });
        (client, log)
    }

    #[test]
    fn update_sends_only_the_settings_given() {
        let (mut client, log) = fake_leader();
        let (out, _, result) = run_line(
            &mut client,
            &["essaim", "swarm", "update", "--dispatcher-heartbeat", "2s"],
        );
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(out, "Swarm updated.\n");
        assert_eq!(
            log.borrow().as_slice(),
            [ControlRequest::SwarmUpdate {
                cert_expiry_ms: None,
                heartbeat_period_ms: Some(2000),
                task_history_limit: None,
            }]
        );
    }

    #[test]
    fn issue_client_writes_a_bundle_with_a_key_made_here() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("ops");
        let dir_text = dir.display().to_string();
        let (mut client, log) = fake_leader();
        let line = [
            "essaim",
            "swarm",
            "ca",
            "issue-client",
            "--out",
            &dir_text,
            "--name",
            "ci",
        ];
        let (out, _, result) = run_line(&mut client, &line);
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(
            out,
            format!(
                "Client bundle written to {dir_text}: use it with essaim --tls-dir {dir_text} \
                 -H tcp://10.0.0.1:4242\n"
            )
        );
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("bundle file");
        assert_eq!(read(bundle::CERT_FILE), "certificate of ci\n");
        assert_eq!(read(bundle::CA_FILE), "roots\n");
        let key = read(bundle::KEY_FILE);
        assert!(key.contains("PRIVATE KEY"), "{key}");
        // Only the request went to the leader, never the key.
        let sent = log.borrow()[0].clone();
        let ControlRequest::IssueClientCert { name, csr_pem } = sent else {
            panic!("sent {sent:?}");
        };
        assert_eq!(name, "ci");
        assert!(csr_pem.contains("CERTIFICATE REQUEST"), "{csr_pem}");
        assert!(!csr_pem.contains("PRIVATE KEY"));

        // A second bundle into the same directory is refused before anything is asked for.
        let (_, _, result) = run_line(&mut client, &line);
        let error = result.expect_err("a bundle is already there");
        assert!(error.is::<UsageError>(), "{error}");
        assert_eq!(Exit::of(&error), Exit::Usage);
        assert_eq!(log.borrow().len(), 1);
        assert_eq!(read(bundle::KEY_FILE), key);

        let mut forced = line.to_vec();
        forced.push("--force");
        let (_, _, result) = run_line(&mut client, &forced);
        assert!(result.is_ok(), "{result:?}");
        assert_ne!(read(bundle::KEY_FILE), key, "a new key");
    }

    #[test]
    fn init_says_what_docker_says() {
        assert_eq!(
            initialized("n1", "SWMTKN-1-a-b", "10.0.0.1:4242"),
            "Swarm initialized: current node (n1) is now a manager.\n\
             \n\
             To add a worker to this swarm, run the following command:\n\
             \n    essaim swarm join --token SWMTKN-1-a-b 10.0.0.1:4242\n\
             \n\
             To add a manager to this swarm, run 'essaim swarm join-token manager' and follow \
             the instructions.\n"
        );
    }
}
