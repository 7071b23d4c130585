//! The process runtime's resource limits (`--limit-cpu`, `--limit-memory`, `--limit-pids`):
//! a control group of the task's own, which the child joins between fork and exec, so that
//! the program and everything it starts are held to them, as in a container.
//!
//! cgroup v2 where `/sys/fs/cgroup` is the unified hierarchy (`memory.max`, `cpu.max`,
//! `pids.max` in `/sys/fs/cgroup/essaim/TASK`), else the v1 controllers' own hierarchies
//! (`memory/essaim/TASK/memory.limit_in_bytes`, `cpu/.../cpu.cfs_quota_us`,
//! `pids/.../pids.max`). A node with neither, or one that does not let the daemon make groups,
//! rejects a task with limits, naming them: a limit is never silently dropped.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use essaim_core::model::Resources;

use crate::executor::StartError;
use crate::process::check;

const ROOT: &str = "/sys/fs/cgroup";
/// `statfs`'s magic number of a cgroup v2 file system.
const CGROUP2_MAGIC: i64 = 0x6367_7270;
/// The CFS period the CPU limit is a share of, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// One limit: which v1 controller holds it, and its file and value in each version.
struct Limit {
    flag: &'static str,
    controller: &'static str,
    /// `(file, value)` pairs, written in order.
    v1: Vec<(&'static str, String)>,
    v2: (&'static str, String),
}

fn limits(resources: &Resources) -> Vec<Limit> {
    let mut limits = Vec::new();
    if resources.limit_memory_bytes > 0 {
        let bytes = resources.limit_memory_bytes.to_string();
        limits.push(Limit {
            flag: "--limit-memory",
            controller: "memory",
            v1: vec![("memory.limit_in_bytes", bytes.clone())],
            v2: ("memory.max", bytes),
        });
    }
    if resources.limit_nano_cpus > 0 {
        let quota = (resources.limit_nano_cpus * CPU_PERIOD_US / 1_000_000_000).max(1_000);
        limits.push(Limit {
            flag: "--limit-cpu",
            controller: "cpu",
            v1: vec![
                ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                ("cpu.cfs_quota_us", quota.to_string()),
            ],
            v2: ("cpu.max", format!("{quota} {CPU_PERIOD_US}")),
        });
    }
    if resources.limit_pids > 0 {
        let pids = resources.limit_pids.to_string();
        limits.push(Limit {
            flag: "--limit-pids",
            controller: "pids",
            v1: vec![("pids.max", pids.clone())],
            v2: ("pids.max", pids),
        });
    }
    limits
}

/// The groups of one task, made before the fork.
pub struct TaskCgroup {
    dirs: Vec<PathBuf>,
    /// Each group's `cgroup.procs`, for the child to write its PID in.
    procs: Vec<CString>,
}

fn is_cgroup2(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the struct we own; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::statfs(c_path.as_ptr(), &mut stat) };
    result == 0 && stat.f_type as i64 == CGROUP2_MAGIC
}

impl TaskCgroup {
    /// The task's groups with its limits written, or `None` when it has no limits.
    ///
    /// # Errors
    /// The node has no cgroups for a limit the task has, or they cannot be written; the
    /// message names the flags.
    pub fn create(
        task_id: &str,
        resources: &Resources,
        node_name: &str,
    ) -> Result<Option<TaskCgroup>, StartError> {
        let limits = limits(resources);
        if limits.is_empty() {
            return Ok(None);
        }
        let flags = limits.iter().map(|l| l.flag).collect::<Vec<_>>().join(", ");
        let refuse = |why: String| {
            StartError::rejected(format!(
                "the process runtime of node {node_name} cannot apply {flags}: {why}"
            ))
        };
        let mut group = TaskCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        let made = if is_cgroup2(Path::new(ROOT)) {
            group.make_v2(task_id, &limits)
        } else {
            group.make_v1(task_id, &limits)
        };
        if let Err(why) = made {
            group.remove();
            return Err(refuse(why));
        }
        Ok(Some(group))
    }

    fn make_v2(&mut self, task_id: &str, limits: &[Limit]) -> Result<(), String> {
        let root = Path::new(ROOT);
        let parent = root.join("essaim");
        let controllers: Vec<String> = limits
            .iter()
            .map(|l| format!("+{}", l.controller))
            .collect();
        std::fs::create_dir_all(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        // The controllers must be handed down to the task's group through its parents.
        for dir in [root, parent.as_path()] {
            let file = dir.join("cgroup.subtree_control");
            std::fs::write(&file, controllers.join(" "))
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
        let dir = parent.join(task_id);
        self.add_dir(&dir)?;
        for limit in limits {
            let (file, value) = &limit.v2;
            write(&dir.join(file), value)?;
        }
        Ok(())
    }

    fn make_v1(&mut self, task_id: &str, limits: &[Limit]) -> Result<(), String> {
        for limit in limits {
            let hierarchy = Path::new(ROOT).join(limit.controller);
            if !hierarchy.join("cgroup.procs").exists() {
                return Err(format!(
                    "no cgroup v2, and no {} controller at {}",
                    limit.controller,
                    hierarchy.display()
                ));
            }
            let dir = hierarchy.join("essaim").join(task_id);
            if !self.dirs.contains(&dir) {
                self.add_dir(&dir)?;
            }
            for (file, value) in &limit.v1 {
                write(&dir.join(file), value)?;
            }
        }
        Ok(())
    }

    fn add_dir(&mut self, dir: &Path) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        self.dirs.push(dir.to_path_buf());
        let procs = dir.join("cgroup.procs");
        self.procs.push(
            CString::new(procs.as_os_str().as_bytes())
                .map_err(|_| format!("{}: NUL in the path", procs.display()))?,
        );
        Ok(())
    }

    /// What the child needs to join the groups: their `cgroup.procs` paths, made before the
    /// fork.
    pub fn join_in_child(&self) -> JoinCgroup {
        JoinCgroup {
            procs: self.procs.clone(),
        }
    }

    /// Removes the groups once the processes of the task are gone (a killed group takes a
    /// moment to leave).
    pub async fn remove_when_empty(&self) {
        for _ in 0..40 {
            let empty = self.dirs.iter().all(|dir| {
                std::fs::read_to_string(dir.join("cgroup.procs"))
                    .map_or(true, |procs| procs.trim().is_empty())
            });
            if empty {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        self.remove();
    }
}

/// The child's side of [`TaskCgroup`].
pub struct JoinCgroup {
    procs: Vec<CString>,
}

impl JoinCgroup {
    /// Runs in the child between fork and exec: system calls only. Moves the calling process
    /// into the groups.
    pub fn join(&self) -> std::io::Result<()> {
        // SAFETY: getpid, open, write and close, on buffers that live through the calls.
        unsafe {
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            let mut pid = libc::getpid() as u32;
            loop {
                at -= 1;
                digits[at] = b'0' + (pid % 10) as u8;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            let text = &digits[at..];
            for procs in &self.procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                check(fd)?;
                let written = libc::write(fd, text.as_ptr().cast(), text.len());
                libc::close(fd);
                if written < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

impl TaskCgroup {
    /// The kernel counted the memory limit hit and killed for it.
    pub fn out_of_memory(&self) -> bool {
        self.dirs.iter().any(|dir| {
            // v2: `oom_kill N` in memory.events; v1: in memory.oom_control.
            ["memory.events", "memory.oom_control"].iter().any(|file| {
                std::fs::read_to_string(dir.join(file))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|line| line.strip_prefix("oom_kill "))
                    .any(|count| count.trim() != "0")
            })
        })
    }

    /// Removes the groups, once every process in them has ended.
    pub fn remove(&self) {
        for dir in &self.dirs {
            if let Err(e) = std::fs::remove_dir(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), "cannot remove a task's cgroup: {e}");
                }
            }
        }
    }
}

fn write(file: &Path, value: &str) -> Result<(), String> {
    std::fs::write(file, value).map_err(|e| format!("{}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_has_its_controller_and_files() {
        let resources = Resources {
            limit_nano_cpus: 500_000_000,
            limit_memory_bytes: 64 << 20,
            limit_pids: 10,
            ..Default::default()
        };
        let limits = limits(&resources);
        let flags: Vec<&str> = limits.iter().map(|l| l.flag).collect();
        assert_eq!(flags, ["--limit-memory", "--limit-cpu", "--limit-pids"]);
        assert_eq!(limits[1].v2, ("cpu.max", "50000 100000".to_string()));
        assert_eq!(limits[1].v1[1], ("cpu.cfs_quota_us", "50000".to_string()));
        assert_eq!(limits[0].v2.1, (64u64 << 20).to_string());
        assert!(super::limits(&Resources::default()).is_empty());
    }
}
