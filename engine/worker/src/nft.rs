//! Rules written whole through `nft -f -`, in one transaction, into a network namespace: the
//! VIP rules of each task's namespace and the routing mesh's rules of the node's own.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether this node can write rules: `nft` is in PATH.
pub fn available() -> bool {
    nft().is_some()
}

fn nft() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("nft"))
        .find(|candidate| candidate.is_file())
}

/// Runs `script` through `nft -f -` in the network namespace at `netns`, or in the node's own
/// when `None`.
///
/// # Errors
/// `nft` is missing, cannot enter the namespace, or refused the script (its message).
///
/// # Caveats
/// Blocks until `nft` ends: call from a blocking thread.
pub fn apply(netns: Option<&Path>, script: &str) -> Result<(), String> {
    let program = nft().ok_or("nft (Debian's nftables) is not installed on this node")?;
    let mut command = Command::new(program);
    command
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let namespace = match netns {
        Some(netns) => {
            Some(File::open(netns).map_err(|e| format!("cannot open {}: {e}", netns.display()))?)
        }
        None => None,
    };
    if let Some(namespace) = &namespace {
        let fd = namespace.as_raw_fd();
        // SAFETY: only a system call between fork and exec; `namespace` outlives the child's
        // start.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("cannot write to nft: {e}"))?;
    }
    let output = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    drop(namespace);
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the rules: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
