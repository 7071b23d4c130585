//! A task's secrets and configs on its node. The leader sends the node every secret and config
//! its live tasks use (and nothing else); the agent keeps them in memory and, before a task
//! starts, writes its files under the node's directory in `/dev/shm`, which is memory (tmpfs):
//! a secret never touches the node's disk. The files of a task go when it ends, and the data
//! when the node's last task that uses it ends.
//!
//! ```text
//!  /dev/shm/essaim/<data dir>/<task id>/secrets/db_pw      seen at /run/secrets/db_pw
//!                                     /configs/etc/app.conf   seen at /etc/app.conf
//! ```
//!
//! The Docker runtime bind-mounts each file, read-only, at its path in the container; the
//! process runtime, which has no file system of its own to put them in, names the two
//! directories in `ESSAIM_SECRETS_DIR` and `ESSAIM_CONFIGS_DIR`. The directories can be
//! crossed but not listed by other users, and the task's ID in their path is not guessable.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use essaim_core::model::{FileKind, Task, TaskFileData};
use parking_lot::Mutex;

use crate::executor::StartError;

/// The variables that name a process-runtime task's directories of secrets and configs.
pub const SECRETS_DIR_VAR: &str = "ESSAIM_SECRETS_DIR";
pub const CONFIGS_DIR_VAR: &str = "ESSAIM_CONFIGS_DIR";

/// The kernel's magic number of a tmpfs, as `statfs` reports it.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The node's directory of task files: its data directory's path, under `/dev/shm/essaim`.
pub fn root_for(data_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let relative = absolute.strip_prefix("/").unwrap_or(&absolute);
    Path::new("/dev/shm/essaim").join(relative)
}

/// Where one of a task's files lies on the node, and where the task sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedFile {
    pub kind: FileKind,
    /// The secret's or config's name.
    pub source: String,
    pub host_path: PathBuf,
    pub path_in_task: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The directory of the task's files of one kind.
pub fn task_dir(root: &Path, task_id: &str, kind: FileKind) -> PathBuf {
    root.join(task_id).join(match kind {
        FileKind::Secret => "secrets",
        FileKind::Config => "configs",
    })
}

/// Where each of the task's secrets and configs goes: pure, so that the runtimes find the
/// files the agent wrote.
pub fn placed(root: &Path, task: &Task) -> Vec<PlacedFile> {
    FileKind::ALL
        .iter()
        .flat_map(|kind| {
            task.spec.files(*kind).iter().map(move |reference| {
                let path_in_task = reference.path_in_task(*kind);
                // The task's path, under the kind's directory: `/run/secrets/db_pw` is
                // `secrets/db_pw`, `/etc/app.conf` is `configs/etc/app.conf`.
                let default_dir = format!("{}/", kind.default_dir());
                let inside = path_in_task
                    .strip_prefix(&default_dir)
                    .unwrap_or(&path_in_task)
                    .trim_start_matches('/');
                PlacedFile {
                    kind: *kind,
                    source: reference.source.clone(),
                    host_path: task_dir(root, &task.id, *kind).join(inside),
                    path_in_task,
                    uid: reference.uid,
                    gid: reference.gid,
                    mode: reference.mode,
                }
            })
        })
        .collect()
}

/// The node's secrets and configs, as the leader last sent them, and the files of its tasks.
pub struct TaskFiles {
    root: PathBuf,
    node_name: String,
    held: Mutex<HashMap<(FileKind, String), Vec<u8>>>,
}

impl TaskFiles {
    pub fn new(data_dir: &Path, node_name: &str) -> TaskFiles {
        TaskFiles {
            root: root_for(data_dir),
            node_name: node_name.to_string(),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The leader's complete set: what it lacks is dropped from memory.
    pub fn replace(&self, set: Vec<TaskFileData>) {
        let mut held = self.held.lock();
        held.clear();
        held.extend(set.into_iter().map(|f| ((f.kind, f.name), f.data)));
    }

    /// Writes the task's files before it starts.
    ///
    /// # Errors
    /// A secret or config the node was not sent, no tmpfs to keep them in, or a file that
    /// cannot be written.
    pub fn write(&self, task: &Task) -> Result<(), StartError> {
        let files = placed(&self.root, task);
        if files.is_empty() {
            return Ok(());
        }
        check_in_memory(&self.node_name)?;
        let held = self.held.lock();
        let written = files.iter().try_for_each(|file| {
            let data = held.get(&(file.kind, file.source.clone())).ok_or_else(|| {
                StartError::rejected(format!(
                    "{} {}: {} {} is not on node {} (the leader could not send it)",
                    file.kind.flag(),
                    file.source,
                    file.kind,
                    file.source,
                    self.node_name
                ))
            })?;
            write_file(&self.root, file, data).map_err(|e| {
                StartError::failed(format!(
                    "{} {}: cannot write {}: {e}",
                    file.kind.flag(),
                    file.source,
                    file.host_path.display()
                ))
            })
        });
        drop(held);
        if written.is_err() {
            self.remove(&task.id);
        }
        written
    }

    /// The task's files go, once it has ended.
    pub fn remove(&self, task_id: &str) {
        let dir = self.root.join(task_id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %dir.display(), "cannot remove a task's files: {e}");
            }
            _ => {}
        }
    }

    /// Every file and all the data go, as the node leaves the swarm.
    pub fn remove_all(&self) {
        self.held.lock().clear();
        let _ = std::fs::remove_dir_all(&self.root);
        // And the directories above it that only led to it.
        let mut dir = self.root.parent();
        while let Some(up) = dir.filter(|d| d.starts_with("/dev/shm/essaim")) {
            if std::fs::remove_dir(up).is_err() {
                break;
            }
            dir = up.parent();
        }
    }
}

fn check_in_memory(node_name: &str) -> Result<(), StartError> {
    // SAFETY: statfs writes into the struct we own; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::statfs(c"/dev/shm".as_ptr(), &mut stat) };
    if result != 0 || stat.f_type as i64 != TMPFS_MAGIC {
        return Err(StartError::rejected(format!(
            "node {node_name} keeps secrets in memory only, in /dev/shm, which is not a tmpfs \
             there"
        )));
    }
    Ok(())
}

/// Writes one file, its directories crossable but not listable by others, then gives it its
/// owner and mode.
fn write_file(root: &Path, file: &PlacedFile, data: &[u8]) -> std::io::Result<()> {
    // Another node of this machine leaving its swarm removes the empty directories above its
    // own, which may be ours too: one that goes between two steps is made again.
    let mut tries = 0;
    loop {
        match write_file_once(root, file, data) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
            done => return done,
        }
    }
}

fn write_file_once(root: &Path, file: &PlacedFile, data: &[u8]) -> std::io::Result<()> {
    let parent = file.host_path.parent().unwrap_or(root);
    std::fs::create_dir_all(parent)?;
    let mut dir = parent;
    while dir.starts_with("/dev/shm/essaim") {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
        match dir.parent() {
            Some(up) => dir = up,
            None => break,
        }
    }
    // Written owner-only first, so that nobody reads it before it has its own mode.
    let temporary = file.host_path.with_extension("essaim-tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        out.write_all(data)?;
    }
    std::os::unix::fs::chown(&temporary, Some(file.uid), Some(file.gid))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(file.mode))?;
    std::fs::rename(&temporary, &file.host_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use essaim_core::model::FileReference;

    fn task_with(secrets: &[&str], configs: &[&str]) -> Task {
        let mut task = crate::testing::task("t1");
        task.spec.secrets = secrets
            .iter()
            .map(|s| FileReference::parse(s).expect("ref"))
            .collect();
        task.spec.configs = configs
            .iter()
            .map(|s| FileReference::parse(s).expect("ref"))
            .collect();
        task
    }

    #[test]
    fn each_file_has_its_place_under_its_kind() {
        let root = Path::new("/dev/shm/essaim/n1");
        let task = task_with(
            &["db_pw", "source=api_v2,target=api_key,mode=0400"],
            &["source=nginx,target=/etc/nginx/nginx.conf", "motd"],
        );
        let files = placed(root, &task);
        let places: Vec<(&str, String)> = files
            .iter()
            .map(|f| (f.path_in_task.as_str(), f.host_path.display().to_string()))
            .collect();
        assert_eq!(
            places,
            vec![
                (
                    "/run/secrets/db_pw",
                    "/dev/shm/essaim/n1/t1/secrets/db_pw".to_string()
                ),
                (
                    "/run/secrets/api_key",
                    "/dev/shm/essaim/n1/t1/secrets/api_key".to_string()
                ),
                (
                    "/etc/nginx/nginx.conf",
                    "/dev/shm/essaim/n1/t1/configs/etc/nginx/nginx.conf".to_string()
                ),
                ("/motd", "/dev/shm/essaim/n1/t1/configs/motd".to_string()),
            ]
        );
        assert_eq!(files[1].mode, 0o400);
        assert_eq!(
            root_for(Path::new("/var/lib/essaim")),
            Path::new("/dev/shm/essaim/var/lib/essaim")
        );
    }

    #[test]
    fn files_are_written_in_memory_and_go_with_their_task() {
        let data_dir = tempfile::tempdir().expect("dir");
        let files = TaskFiles::new(data_dir.path(), "n1");
        let task = task_with(&["db_pw"], &["source=app,target=/etc/app.conf"]);
        let missing = files.write(&task).expect_err("nothing sent yet");
        assert!(missing.rejected && missing.message.contains("secret db_pw is not on node n1"));
        files.replace(vec![
            TaskFileData {
                kind: FileKind::Secret,
                name: "db_pw".into(),
                data: b"hunter2".to_vec(),
            },
            TaskFileData {
                kind: FileKind::Config,
                name: "app".into(),
                data: b"port=80\n".to_vec(),
            },
        ]);
        files.write(&task).expect("written");
        let secret = task_dir(&files.root, "t1", FileKind::Secret).join("db_pw");
        assert_eq!(std::fs::read(&secret).expect("read"), b"hunter2");
        assert_eq!(
            std::fs::metadata(&secret)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777,
            0o444
        );
        let config = task_dir(&files.root, "t1", FileKind::Config).join("etc/app.conf");
        assert_eq!(std::fs::read(&config).expect("read"), b"port=80\n");
        files.remove("t1");
        assert!(!files.root.join("t1").exists());
        files.remove_all();
        assert!(!files.root.exists());
    }
}
