//! The heartbeat every member sends to the leader, so the leader knows it is alive. Workers
//! find the leader through the managers they know; managers know it from Raft.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use essaim_api::pb::{HeartbeatRequest, HeartbeatResponse};
use essaim_api::transport;
use tonic::transport::Channel;

use crate::swarm::{Leader, Swarm};

/// The period used until the leader says otherwise.
const DEFAULT_PERIOD: Duration = Duration::from_millis(500);
/// Pause before following a redirect, so a confused pair of managers cannot make us spin.
const REDIRECT_PAUSE: Duration = Duration::from_millis(50);

pub async fn run(swarm: Arc<Swarm>) {
    let mut period = DEFAULT_PERIOD;
    // The manager that last accepted our heartbeat, or that we were redirected to.
    let mut target: Option<String> = None;
    let mut next_manager = 0usize;
    let mut channels: HashMap<String, Channel> = HashMap::new();
    let mut warned_removed = false;
    loop {
        let leader = swarm.leader();
        if leader == Leader::Me {
            swarm.sessions.record(swarm.node_id(), Instant::now());
            period = Duration::from_millis(
                swarm
                    .state()
                    .cluster
                    .as_ref()
                    .map(|c| c.config.heartbeat_period_ms)
                    .unwrap_or(500),
            );
            tokio::time::sleep(period).await;
            continue;
        }
        let addr = match (&leader, &target) {
            (Leader::Other { addr, .. }, _) => addr.clone(),
            (_, Some(addr)) => addr.clone(),
            _ => {
                let managers = swarm.manager_addrs();
                if managers.is_empty() {
                    tokio::time::sleep(period).await;
                    continue;
                }
                next_manager = (next_manager + 1) % managers.len();
                managers[next_manager].clone()
            }
        };
        match send(&mut channels, &addr, swarm.node_id(), period).await {
            Ok(reply) if reply.accepted => {
                warned_removed = false;
                target = Some(addr);
                if reply.period_ms > 0 {
                    period = Duration::from_millis(reply.period_ms);
                }
                swarm.set_manager_addrs(reply.manager_addrs);
            }
            Ok(reply) => {
                target = (!reply.leader_addr.is_empty()).then_some(reply.leader_addr);
                tokio::time::sleep(REDIRECT_PAUSE).await;
                continue;
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                if !warned_removed {
                    tracing::warn!("the leader does not know this node: {}", status.message());
                    warned_removed = true;
                }
                target = None;
            }
            Err(status) => {
                tracing::debug!(%addr, "heartbeat failed: {}", status.message());
                target = None;
            }
        }
        tokio::time::sleep(period).await;
    }
}

async fn send(
    channels: &mut HashMap<String, Channel>,
    addr: &str,
    node_id: &str,
    timeout: Duration,
) -> Result<HeartbeatResponse, tonic::Status> {
    let channel = match channels.get(addr) {
        Some(channel) => channel.clone(),
        None => {
            let channel = transport::cluster_channel(addr)
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            channels.insert(addr.to_string(), channel.clone());
            channel
        }
    };
    let mut request = tonic::Request::new(HeartbeatRequest {
        node_id: node_id.to_string(),
    });
    request.set_timeout(timeout);
    transport::membership_client(channel)
        .heartbeat(request)
        .await
        .map(|r| r.into_inner())
}
