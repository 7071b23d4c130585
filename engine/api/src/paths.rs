//! Where a node keeps its state and its local socket unless told otherwise. The daemon and the
//! shell both read these, so `essaimd` and `essaim` find each other with no flags.

use std::path::PathBuf;

/// `$ESSAIM_DATA_DIR`, else `/var/lib/essaim` for root, else `~/.local/share/essaim`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ESSAIM_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let is_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || std::env::var_os("HOME").is_some_and(|h| h == "/root");
    if is_root {
        return PathBuf::from("/var/lib/essaim");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/essaim"),
        None => PathBuf::from("/tmp/essaim"),
    }
}

/// The local socket inside a data directory.
pub fn socket_in(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("essaim.sock")
}

/// The default local socket: the one in the default data directory.
pub fn default_socket() -> PathBuf {
    socket_in(&default_data_dir())
}
