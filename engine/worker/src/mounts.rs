//! A task's `--mount`s on the node: what both runtimes check before a start, and how the
//! process runtime mounts them (the Docker runtime hands them to the engine).
//!
//! The process runtime runs a task's program on the node's own file system, so it mounts in
//! a mount namespace of the task's own: a bind or a volume is bind-mounted over the target,
//! a tmpfs mounted there, and the node's own view of that path does not change. The target
//! must exist on the node (there is no image to make it in). A named volume is a directory
//! `VOLUMES/NAME` of the node's data directory that outlives the task, as in Swarm; a volume
//! without a name is the task's own, `VOLUMES/_tasks/TASK/N`, and goes with it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use essaim_core::model::{MountKind, Task};

use crate::executor::StartError;
use crate::process::{check, private_mount_namespace};

/// Why the task cannot start on this node: a bind source it does not have.
pub fn missing_bind_source(task: &Task, node_name: &str) -> Option<String> {
    task.spec
        .mounts
        .iter()
        .filter(|m| m.kind == MountKind::Bind)
        .find(|m| !Path::new(&m.source).exists())
        .map(|m| {
            format!(
                "--mount: bind source {} does not exist on node {node_name}",
                m.source
            )
        })
}

/// The directory of the volumes a task has of its own, under `volumes`.
pub fn task_volumes(volumes: &Path, task_id: &str) -> PathBuf {
    volumes.join("_tasks").join(task_id)
}

/// One mount, ready for the child: paths as C strings, made before the fork.
struct Prepared {
    /// The directory bind-mounted over the target; `None` for a tmpfs.
    source: Option<CString>,
    target: CString,
    read_only: bool,
    /// `size=N` for a tmpfs.
    options: Option<CString>,
}

/// The task's mounts, checked and made ready before the fork.
pub struct Mounts {
    prepared: Vec<Prepared>,
}

fn c_path(path: &Path) -> Result<CString, StartError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| StartError::rejected(format!("--mount: {} holds a NUL byte", path.display())))
}

impl Mounts {
    /// Checks the task's mounts against the node and makes the volumes' directories.
    ///
    /// # Errors
    /// A source or target the node does not have, or a volume directory it cannot make.
    pub fn prepare(
        task: &Task,
        volumes: Option<&Path>,
        node_name: &str,
    ) -> Result<Mounts, StartError> {
        if let Some(problem) = missing_bind_source(task, node_name) {
            return Err(StartError::rejected(problem));
        }
        let mut prepared = Vec::new();
        for (index, mount) in task.spec.mounts.iter().enumerate() {
            let target = Path::new(&mount.target);
            if !target.exists() {
                return Err(StartError::rejected(format!(
                    "--mount: target {} does not exist on node {node_name} (the process \
                     runtime mounts over the node's own file system)",
                    mount.target
                )));
            }
            let source = match mount.kind {
                MountKind::Bind => Some(PathBuf::from(&mount.source)),
                MountKind::Tmpfs => None,
                MountKind::Volume => {
                    let Some(volumes) = volumes else {
                        return Err(StartError::rejected(format!(
                            "--mount: node {node_name} keeps no volumes"
                        )));
                    };
                    let dir = if mount.source.is_empty() {
                        task_volumes(volumes, &task.id).join(index.to_string())
                    } else {
                        volumes.join(&mount.source)
                    };
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        StartError::failed(format!(
                            "--mount: cannot make the volume {}: {e}",
                            dir.display()
                        ))
                    })?;
                    Some(dir)
                }
            };
            let options = (mount.kind == MountKind::Tmpfs && mount.tmpfs_size > 0).then(|| {
                CString::new(format!("size={}", mount.tmpfs_size)).expect("no NUL in a number")
            });
            prepared.push(Prepared {
                source: source.as_deref().map(c_path).transpose()?,
                target: c_path(target)?,
                read_only: mount.read_only,
                options,
            });
        }
        Ok(Mounts { prepared })
    }

    /// Runs in the child between fork and exec: system calls only. Unless `in_own_namespace`
    /// (a networked task's is made when it joins its networks), the mounts get a private
    /// mount namespace first, so that the node never sees them.
    pub fn apply(&self, in_own_namespace: bool) -> std::io::Result<()> {
        if self.prepared.is_empty() {
            return Ok(());
        }
        if !in_own_namespace {
            private_mount_namespace()?;
        }
        for mount in &self.prepared {
            // SAFETY: plain system calls on NUL-terminated strings that live through them.
            unsafe {
                match &mount.source {
                    Some(source) => check(libc::mount(
                        source.as_ptr(),
                        mount.target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ))?,
                    None => check(libc::mount(
                        c"tmpfs".as_ptr(),
                        mount.target.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        mount
                            .options
                            .as_ref()
                            .map_or(std::ptr::null(), |o| o.as_ptr().cast()),
                    ))?,
                }
                if mount.read_only {
                    // A bind mount turns read-only only when mounted again.
                    let bind = if mount.source.is_some() {
                        libc::MS_BIND
                    } else {
                        0
                    };
                    check(libc::mount(
                        std::ptr::null(),
                        mount.target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REMOUNT | bind | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
        }
        Ok(())
    }
}
