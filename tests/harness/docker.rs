//! What the Docker tests need from the machine's engine: the test image, and a look at what
//! essaim made there. No registry is reachable, so the image is made here: Debian's static
//! busybox in an image of its own (`docker import` of a one-binary root file system). When
//! busybox is missing the harness installs it (`scripts/install-test-deps.sh`), so that
//! `cargo test --workspace` alone passes on a fresh machine.

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// The test image's name. It has busybox's applets: `sh`, `httpd`, `wget`, `nc`, `sleep`...
pub const TEST_IMAGE: &str = "essaim-test/busybox:2";
/// Where Debian's busybox-static puts its binary (`scripts/install-test-deps.sh`).
pub const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "httpd", "wget", "sleep", "hostname", "echo", "cat", "test", "true", "false", "touch",
    "rm", "mkdir", "ls", "kill", "env", "nc",
];

/// Runs the docker command line.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker command line runs")
}

/// The test image, made once per test process, or `None` when no Docker engine answers here:
/// the caller then skips, and says so on stderr.
pub fn test_image() -> Option<&'static str> {
    static IMAGE: OnceLock<Option<&'static str>> = OnceLock::new();
    *IMAGE.get_or_init(|| {
        let engine = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !engine.is_ok_and(|status| status.success()) {
            return None;
        }
        if let Err(e) = make_test_image() {
            panic!("cannot make the test image {TEST_IMAGE}: {e:#}");
        }
        Some(TEST_IMAGE)
    })
}

fn make_test_image() -> Result<()> {
    if docker(&["image", "inspect", TEST_IMAGE]).status.success() {
        return Ok(());
    }
    install_test_deps()?;
    let root = tempfile::Builder::new()
        .prefix("essaim-test-image-")
        .tempdir()?;
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(root.path().join("tmp"))?;
    std::fs::copy(BUSYBOX, bin.join("busybox"))?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .context("tar")?;
    let archive = tar.stdout.take().context("tar's output")?;
    let import = Command::new("docker")
        .args([
            "import",
            "--change",
            "CMD [\"/bin/sh\"]",
            "--change",
            "ENV PATH=/bin",
            "--change",
            "LABEL essaim.test=true",
            "-",
            TEST_IMAGE,
        ])
        .stdin(archive)
        .output()
        .context("docker import")?;
    tar.wait()?;
    if !import.status.success() {
        bail!(
            "docker import failed: {}",
            String::from_utf8_lossy(&import.stderr)
        );
    }
    Ok(())
}

/// What the tests run beyond Rust: Debian's static busybox (the test image, the web servers
/// of the network tests) and nftables (the VIPs' rules).
const TEST_PROGRAMS: &[&str] = &[
    BUSYBOX,
    "/usr/sbin/nft",
    REGISTRY_PROGRAM,
    "/usr/bin/htpasswd",
];
/// Debian's docker-registry (the CNCF distribution registry).
const REGISTRY_PROGRAM: &str = "/usr/bin/docker-registry";

/// An image registry on loopback that wants a password, as a private registry does: Debian's
/// docker-registry with htpasswd authentication, its storage in a temporary directory. It
/// stops when dropped.
pub struct Registry {
    /// `127.0.0.1:PORT`, as image names and `docker login` take it.
    pub address: String,
    pub username: String,
    pub password: String,
    /// A docker client configuration (`docker --config`) logged in to it.
    pub client_config: tempfile::TempDir,
    child: std::process::Child,
    _storage: tempfile::TempDir,
}

impl Registry {
    /// Starts one, and logs a docker client configuration in to it.
    ///
    /// # Errors
    /// The programs are missing and cannot be installed, or the registry does not answer.
    pub fn start() -> Result<Registry> {
        install_test_deps()?;
        let storage = tempfile::Builder::new()
            .prefix("essaim-registry-")
            .tempdir()?;
        let (username, password) = (
            "essaim-ci".to_string(),
            format!("pw-{}", std::process::id()),
        );
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", &username, &password])
            .output()
            .context("htpasswd")?;
        if !htpasswd.status.success() {
            bail!("htpasswd: {}", String::from_utf8_lossy(&htpasswd.stderr));
        }
        std::fs::write(storage.path().join("htpasswd"), &htpasswd.stdout)?;
        let port = crate::free_port();
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n\
             http:\n  addr: {address}\nauth:\n  htpasswd:\n    realm: essaim-test\n    \
             path: {root}/htpasswd\n",
            root = storage.path().display()
        );
        let config_path = storage.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new(REGISTRY_PROGRAM);
        command
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(storage.path().join("registry.log"))?);
        let child = crate::die_with_parent(&mut command).spawn()?;
        let client_config = tempfile::Builder::new()
            .prefix("essaim-docker-config-")
            .tempdir()?;
        let registry = Registry {
            address,
            username,
            password,
            client_config,
            child,
            _storage: storage,
        };
        crate::wait_for(
            "the registry to answer",
            std::time::Duration::from_secs(20),
            || {
                Ok(std::net::TcpStream::connect(&registry.address)
                    .is_ok()
                    .then_some(()))
            },
        )?;
        let mut login = Command::new("docker")
            .arg("--config")
            .arg(registry.client_config.path())
            .args([
                "login",
                "--username",
                &registry.username,
                "--password-stdin",
            ])
            .arg(&registry.address)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = login.stdin.take() {
            use std::io::Write;
            stdin.write_all(registry.password.as_bytes())?;
        }
        let login = login.wait_with_output()?;
        if !login.status.success() {
            bail!("docker login: {}", String::from_utf8_lossy(&login.stderr));
        }
        Ok(registry)
    }

    /// Runs the docker command line as the logged-in client.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("--config")
            .arg(self.client_config.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the docker command line runs")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Installs the test programs that are missing, through the project's one install script.
/// Test processes may run side by side (nextest), and two apt-get runs at once fail on dpkg's
/// lock, so the install holds a machine-wide lock (`flock`, from util-linux).
///
/// # Errors
/// One is missing and could not be installed.
pub fn install_test_deps() -> Result<()> {
    let missing = || {
        TEST_PROGRAMS
            .iter()
            .filter(|p| !std::path::Path::new(p).exists())
            .copied()
            .collect::<Vec<_>>()
    };
    if missing().is_empty() {
        return Ok(());
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/install-test-deps.sh"
    );
    eprintln!(
        "{} missing: installing with scripts/install-test-deps.sh",
        missing().join(", ")
    );
    let install = Command::new("flock")
        .arg(std::env::temp_dir().join("essaim-install-test-deps.lock"))
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .context("running flock scripts/install-test-deps.sh")?;
    if !install.status.success() || !missing().is_empty() {
        bail!(
            "{} missing and scripts/install-test-deps.sh could not install them \
             (Debian's busybox-static, nftables, docker-registry and apache2-utils; it needs root or sudo and Debian's package \
             archive): {}{}",
            missing().join(", "),
            String::from_utf8_lossy(&install.stdout),
            String::from_utf8_lossy(&install.stderr)
        );
    }
    Ok(())
}

/// Names of the containers (running or not) that carry `label` (`key=value`).
pub fn containers(label: &str) -> Vec<String> {
    lines(&docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Names}}",
    ]))
}

/// Names of the networks that carry `label` (`key=value`).
pub fn networks(label: &str) -> Vec<String> {
    lines(&docker(&[
        "network",
        "ls",
        "--filter",
        &format!("label={label}"),
        "--format",
        "{{.Name}}",
    ]))
}

fn lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .filter(|line| !line.is_empty())
        .collect()
}

/// Removes, when dropped, whatever a test's services left on the engine (containers, then
/// networks), so that a failed test leaves nothing behind either. Declare it before the
/// cluster: dropped after it, once no agent can start a container any more.
pub struct Cleanup {
    pub services: Vec<String>,
    pub networks: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if test_image().is_none() {
            return;
        }
        for service in &self.services {
            let names = containers(&format!("essaim.service.name={service}"));
            if !names.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(names.iter().map(String::as_str));
                docker(&args);
            }
            remove_networks(&format!("{service}_default"));
        }
        for network in &self.networks {
            remove_networks(network);
        }
    }
}

/// Removes every network essaim made under `name` (by ID: two of one name may exist).
fn remove_networks(name: &str) {
    let ids = lines(&docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("label=essaim.network={name}"),
    ]));
    for id in ids {
        docker(&["network", "rm", &id]);
    }
}
