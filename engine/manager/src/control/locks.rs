//! What the leader does with the lock requests of the control API: `essaim run --lock` takes
//! a lease on a name, renews it while its script runs, and releases it at the end. The rules
//! are the state machine's (`essaim_core::state`); the leader checks the request, writes it and
//! says how long the lease has left.

use essaim_api::control::LockView;
use essaim_api::{ControlError, ControlReply};
use essaim_core::model::validate_lock_request;
use essaim_core::{Command, StateError, Timestamp};

use crate::swarm::Swarm;

/// Takes the lock, or says who holds it: a lock held by another is an answer, not an error.
///
/// # Errors
/// An invalid request (naming the field at fault), or no quorum.
pub async fn acquire(
    swarm: &Swarm,
    name: String,
    holder: String,
    ttl_ms: u64,
) -> Result<ControlReply, ControlError> {
    validate_lock_request(&name, &holder, Some(ttl_ms)).map_err(ControlError::InvalidArgument)?;
    let asked = swarm.replica.clock().now();
    let written = swarm
        .replica
        .write(vec![Command::AcquireLock {
            name: name.clone(),
            holder: holder.clone(),
            ttl_ms,
        }])
        .await?
        .single();
    match written {
        Ok(_) => {
            tracing::info!(lock = %name, %holder, ttl_ms, "lock taken");
            Ok(ControlReply::Lock(granted(
                name,
                holder,
                ttl_ms,
                asked,
                swarm.replica.clock().now(),
            )))
        }
        Err(StateError::LockHeld {
            holder: current,
            expires_at,
            ..
        }) => {
            tracing::debug!(lock = %name, %holder, %current, "lock held by another");
            Ok(ControlReply::Lock(LockView {
                name,
                holder: current,
                acquired: false,
                expires_in_ms: expires_in(expires_at, swarm.replica.clock().now()),
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// # Errors
/// An invalid request, a lock that another holder took after this one's lease expired (or
/// never held by this one), a lock nobody holds, or no quorum.
pub async fn renew(
    swarm: &Swarm,
    name: String,
    holder: String,
    ttl_ms: u64,
) -> Result<ControlReply, ControlError> {
    validate_lock_request(&name, &holder, Some(ttl_ms)).map_err(ControlError::InvalidArgument)?;
    let asked = swarm.replica.clock().now();
    swarm
        .replica
        .write_one(Command::RenewLock {
            name: name.clone(),
            holder: holder.clone(),
            ttl_ms,
        })
        .await?;
    tracing::debug!(lock = %name, %holder, ttl_ms, "lock renewed");
    Ok(ControlReply::Lock(granted(
        name,
        holder,
        ttl_ms,
        asked,
        swarm.replica.clock().now(),
    )))
}

/// # Errors
/// An invalid request, a lock held by another holder (named), a lock nobody holds, or no
/// quorum.
pub async fn release(
    swarm: &Swarm,
    name: String,
    holder: String,
) -> Result<ControlReply, ControlError> {
    validate_lock_request(&name, &holder, None).map_err(ControlError::InvalidArgument)?;
    swarm
        .replica
        .write_one(Command::ReleaseLock {
            name: name.clone(),
            holder: holder.clone(),
        })
        .await?;
    tracing::info!(lock = %name, %holder, "lock released");
    Ok(ControlReply::Done)
}

/// Every lease, by name; `acquired` says whether it is live.
///
/// # Errors
/// No quorum.
pub async fn list(swarm: &Swarm) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let now = swarm.replica.clock().now();
    let state = swarm.replica.state();
    Ok(ControlReply::Locks(
        state
            .locks()
            .map(|(name, lease)| LockView {
                name: name.to_string(),
                holder: lease.holder.clone(),
                acquired: lease.is_live(now),
                expires_in_ms: expires_in(lease.expires_at, now),
            })
            .collect(),
    ))
}

/// The caller's lease, as written by an entry proposed after `asked`. The entry's time is at
/// least `asked`, so the lease ends no sooner than `ttl_ms` after it: counting from `asked`
/// may only make the lease look shorter than it is, the safe side for its holder.
fn granted(
    name: String,
    holder: String,
    ttl_ms: u64,
    asked: Timestamp,
    now: Timestamp,
) -> LockView {
    LockView {
        name,
        holder,
        acquired: true,
        expires_in_ms: ttl_ms.saturating_sub(now.millis_since(asked)),
    }
}

fn expires_in(expires_at: Timestamp, now: Timestamp) -> u64 {
    expires_at.millis_since(now)
}
