//! What the leader does with the secret and config requests of the control API. A secret's
//! data is sealed here, with the managers' data key, before it is written: the Raft log and
//! its snapshots only ever hold it sealed. No answer carries a secret's data; a config's is
//! shown by `inspect`.

use essaim_api::control::FileView;
use essaim_api::{ControlError, ControlReply};
use essaim_core::model::{
    check_file_name, FileData, FileKind, FileSpec, StoredFile, MAX_FILE_DATA,
};
use essaim_core::{ClusterState, Command};

use crate::identity::new_object_id;
use crate::swarm::Swarm;

/// # Errors
/// An invalid name, a name taken, too much data, or no quorum.
pub async fn create(
    swarm: &Swarm,
    kind: FileKind,
    spec: FileSpec,
    data: Vec<u8>,
) -> Result<ControlReply, ControlError> {
    check_file_name(&spec.name)
        .map_err(|e| ControlError::InvalidArgument(format!("{kind} create: {e}")))?;
    if data.len() > MAX_FILE_DATA {
        return Err(ControlError::InvalidArgument(format!(
            "{kind} create: {} bytes is more than the {MAX_FILE_DATA} a {kind} may hold",
            data.len()
        )));
    }
    swarm.replica.before_write().await?;
    if swarm
        .replica
        .state()
        .file_by_name(kind, &spec.name)
        .is_some()
    {
        return Err(ControlError::Conflict(format!(
            "{kind} {} already exists: a {kind}'s data never changes; create one under a new \
             name and move the services to it (--{kind}-rm OLD --{kind}-add source=NEW,target=OLD)",
            spec.name
        )));
    }
    let id = new_object_id();
    let sealed = match kind {
        FileKind::Secret => swarm.replica.data_key().seal(&id, &data)?,
        FileKind::Config => FileData::Plain(data.clone()),
    };
    let file = StoredFile {
        id: id.clone(),
        version: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        kind,
        spec,
        data: sealed,
        size: data.len() as u64,
    };
    tracing::info!(%kind, name = %file.spec.name, size = file.size, "{kind} created");
    swarm
        .replica
        .write_one(Command::CreateFile { file })
        .await?;
    let state = swarm.replica.state();
    Ok(ControlReply::File(view(&state, state.file(kind, &id)?)))
}

/// # Errors
/// No quorum.
pub async fn list(swarm: &Swarm, kind: FileKind) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let state = swarm.replica.state();
    let mut files: Vec<FileView> = state.files(kind).map(|f| view(&state, f)).collect();
    files.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(ControlReply::Files(files))
}

/// # Errors
/// Unknown name, or no quorum.
pub async fn inspect(
    swarm: &Swarm,
    kind: FileKind,
    name: &str,
) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let state = swarm.replica.state();
    Ok(ControlReply::File(view(&state, state.file(kind, name)?)))
}

/// # Errors
/// Unknown name, one in use (naming the services), or no quorum.
pub async fn remove(
    swarm: &Swarm,
    kind: FileKind,
    name: &str,
) -> Result<ControlReply, ControlError> {
    swarm.replica.before_write().await?;
    let id = swarm.replica.state().file(kind, name)?.id.clone();
    swarm
        .replica
        .write_one(Command::RemoveFile {
            kind,
            id: id.clone(),
        })
        .await?;
    tracing::info!(%kind, %id, "{kind} removed");
    Ok(ControlReply::Done)
}

fn view(state: &ClusterState, file: &StoredFile) -> FileView {
    FileView {
        id: file.id.clone(),
        kind: file.kind,
        version: file.version,
        created_at: file.created_at,
        updated_at: file.updated_at,
        spec: file.spec.clone(),
        size: file.size,
        data: match &file.data {
            FileData::Plain(data) => Some(data.clone()),
            FileData::Sealed { .. } => None,
        },
        services: state.file_users(file),
    }
}
