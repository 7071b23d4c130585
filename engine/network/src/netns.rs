//! Named network namespaces made the way `ip netns add` makes them, and code run inside one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

/// Where `ip netns` keeps its namespaces, so that `ip netns exec` finds ours.
pub const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot {op} network namespace {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl NetnsError {
    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetnsError + 'a {
        move |source| NetnsError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(nix::Error) -> NetnsError + 'a {
        move |errno| NetnsError::Io {
            op,
            path: path.to_path_buf(),
            source: errno.into(),
        }
    }

    /// The operating system's reason, to tell "not permitted" (not root) from the rest.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            NetnsError::Io { source, .. } => source.kind(),
        }
    }
}

/// `/run/netns/<name>`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates the namespace `/run/netns/<name>`, empty but for a `lo` that is down.
///
/// # Errors
/// When it exists already, and when not allowed (it needs `CAP_SYS_ADMIN`).
pub fn create(name: &str) -> Result<PathBuf, NetnsError> {
    let dir = Path::new(NETNS_DIR);
    fs::create_dir_all(dir).map_err(NetnsError::io("create the directory of", dir))?;
    make_shared(dir)?;

    let path = path_of(name);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(NetnsError::io("create", &path))?;
    let target = path.clone();
    let made = std::thread::Builder::new()
        .name(format!("netns-add-{name}"))
        .spawn(move || -> Result<(), NetnsError> {
            // This thread alone moves to the new namespace; the bind mount keeps it alive after
            // the thread ends. `/proc/self` would name the main thread's namespace instead.
            unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::sys("unshare", &target))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(NetnsError::sys("bind-mount", &target))
        })
        .map_err(NetnsError::io("start a thread for", &path))?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    if let Err(error) = made {
        let _ = fs::remove_file(&path);
        return Err(error);
    }
    Ok(path)
}

/// Lets mounts under the directory propagate to other mount namespaces, as `ip` does, so that a
/// namespace made here is visible to containers that share `/run`.
fn make_shared(dir: &Path) -> Result<(), NetnsError> {
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Err(nix::Error::EINVAL) => {
            // Not a mount point yet: make it one.
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(NetnsError::sys("bind-mount the directory of", dir))?;
            shared().map_err(NetnsError::sys("share the directory of", dir))
        }
        other => other.map_err(NetnsError::sys("share the directory of", dir)),
    }
}

/// Removes `/run/netns/<name>`; the namespace itself ends when nothing else holds it (a process,
/// a socket, an open file). Removing one that does not exist succeeds.
///
/// # Errors
/// When the mount or the file cannot be removed.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    let path = path_of(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(errno) => return Err(NetnsError::sys("unmount", &path)(errno)),
    }
    match fs::remove_file(&path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            Err(NetnsError::io("remove", &path)(error))
        }
        _ => Ok(()),
    }
}

/// Runs `f` on a new thread that has entered the network namespace at `path`, and waits for it.
/// Sockets that `f` opens stay in that namespace after the thread ends.
///
/// # Errors
/// When the namespace cannot be opened or entered. A panic in `f` is resumed in the caller.
///
/// # Caveats
/// Blocks the calling thread until `f` returns.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let namespace = File::open(path).map_err(NetnsError::io("open", path))?;
    let target = path.to_path_buf();
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            // A dedicated thread, so that no pooled thread is ever left in another namespace.
            setns(&namespace, CloneFlags::CLONE_NEWNET)
                .map_err(NetnsError::sys("enter", &target))?;
            Ok(f())
        })
        .map_err(NetnsError::io("start a thread for", path))?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// A new network namespace with no name, alive while the returned file is open (and while a
/// process is in it): nothing is left behind when its holder dies, however it dies. The
/// namespace is reachable at `/proc/<our pid>/fd/<its fd>` (see [`path_of_file`]), and a child
/// process joins it with `setns` on the file's descriptor before it executes its program.
///
/// # Errors
/// When not allowed (it needs `CAP_SYS_ADMIN`), or no thread can be started.
pub fn anonymous() -> Result<File, NetnsError> {
    let here = Path::new("/proc/thread-self/ns/net");
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            // A thread of its own enters the new namespace and ends there: no pooled thread is
            // ever left in it.
            unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::sys("create", here))?;
            File::open(here).map_err(NetnsError::io("open", here))
        })
        .map_err(NetnsError::io("start a thread for", here))?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The path under which this process reaches the namespace that `file` holds.
pub fn path_of_file(file: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        file.as_raw_fd()
    ))
}
