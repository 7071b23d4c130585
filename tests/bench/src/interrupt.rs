//! Ctrl-C, SIGTERM or SIGHUP in the middle of a run: the daemons and etcd members this run
//! started are killed and its data directories removed before it exits, as after a full run.
//!
//! Every directory a run makes lives under one root (tempfile's default directory is set to it),
//! so removing the root removes them all. Children that outlive a kill -9 of the benchmark itself
//! are killed by the kernel (see `essaim_tests::die_with_parent`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Shell commands that undo what a scenario did outside the run's root (a swarm joined,
/// containers made), run at an interruption after the children are stopped.
static UNDO: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds `command` (run by `sh -c`) to what an interruption undoes.
pub fn on_interrupt(command: &str) {
    UNDO.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(command.to_string());
}

/// Namespaced nodes for a scenario, which an interruption deletes as it does the run's root.
pub fn underlay(nodes: usize) -> anyhow::Result<essaim_tests::underlay::Underlay> {
    let underlay = essaim_tests::underlay::Underlay::new(nodes)?;
    on_interrupt(&underlay.removal_command());
    Ok(underlay)
}

/// The run's root directory; removed when dropped.
pub struct RunRoot(PathBuf);

impl Drop for RunRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes the run's root, points the temporary directory at it and starts the thread that waits
/// for an interruption. Call first in `main`, before any other thread starts: the signals are
/// blocked here so that every later thread inherits the mask and only the waiting thread sees
/// them.
pub fn guard() -> anyhow::Result<RunRoot> {
    let root = tempfile::Builder::new()
        .prefix("essaim-bench-")
        .tempdir()?
        .keep();
    // Not TMPDIR: cargo, which the harness runs to build the daemon, would see a new
    // environment each run and rebuild crates whose build scripts watch it.
    tempfile::env::override_temp_dir(&root)
        .map_err(|_| anyhow::anyhow!("the temporary directory was set before the run's root"))?;
    // SAFETY: plain libc calls on a local signal set; no other thread exists yet.
    let signals = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let waiting_root = root.clone();
    std::thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: sigwait reads the set and writes the signal number.
        unsafe { libc::sigwait(&signals, &mut signal) };
        eprintln!(
            "interrupted: stopping the daemons and removing {}",
            waiting_root.display()
        );
        stop_children();
        let undo = UNDO.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for command in undo.iter().rev() {
            let _ = std::process::Command::new("sh")
                .args(["-c", command])
                .status();
        }
        remove(&waiting_root);
        std::process::exit(128 + signal);
    });
    Ok(RunRoot(root))
}

/// Kills every child process of this one and reaps it.
fn stop_children() {
    let me = std::process::id();
    let children: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(me))
        .collect();
    for pid in &children {
        // SAFETY: signals a process this one started and has not reaped yet.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for pid in &children {
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(*pid, std::ptr::null_mut(), 0) };
    }
}

/// The parent's pid, from /proc/PID/stat ("pid (comm) state ppid ...").
fn parent_of(pid: i32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Removes the root, trying again while a dying process still writes into it.
fn remove(root: &Path) {
    for _ in 0..10 {
        if std::fs::remove_dir_all(root).is_ok() || !root.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
