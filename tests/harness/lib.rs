//! The end-to-end test harness: starts real `essaimd` processes on loopback ports, each with
//! its own data directory and socket, and drives them with the real `essaim` command line.
//! Everything it starts is killed and deleted when the test ends, pass or fail; a failing
//! test prints the daemons' logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// The directory holding the built binaries: tests run from `target/<profile>/deps`, bench
/// binaries from `target/<profile>`.
fn bin_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the running binary knows its own path");
        let mut dir = exe
            .parent()
            .expect("binaries live in target/<profile>")
            .to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir = dir.parent().map(Path::to_path_buf).unwrap_or(dir);
        }
        // Cargo builds binaries only for tests of their own package: build ours here, once.
        // A no-op when they are up to date.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut build = Command::new(cargo);
        // From this workspace, wherever the test or benchmark was started.
        build.current_dir(env!("CARGO_MANIFEST_DIR"));
        // Cargo gives the program it runs (this test, or the benchmark) its package's
        // variables; passed on, they would look like a changed environment to build scripts
        // that watch them (ring's), and every run would rebuild those crates.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_MANIFEST_")
                || name.starts_with("CARGO_BIN_")
                || [
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                ]
                .contains(&name.as_ref())
            {
                build.env_remove(name.as_ref());
            }
        }
        build.args([
            "build",
            "--quiet",
            "-p",
            "essaim-daemon",
            "-p",
            "essaim-shell",
        ]);
        if dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building essaimd and essaim failed");
        dir
    })
}

pub fn essaimd_path() -> PathBuf {
    bin_dir().join("essaimd")
}

pub fn essaim_path() -> PathBuf {
    bin_dir().join("essaim")
}

/// Makes a child started by `command` die when the thread that starts it ends (with this
/// process, killed or not): a test or a benchmark that is interrupted leaves no daemon behind.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

pub mod docker;
pub mod underlay;

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with the last reason.
///
/// # Errors
/// The condition did not hold in time.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// One `essaimd` process.
pub struct Daemon {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
    /// The address it listens and advertises on: 127.0.0.1 unless it runs in a network
    /// namespace of its own.
    pub host: String,
    /// The network namespace it runs in (`ip netns` names it), if not the test's.
    pub netns: Option<String>,
    /// Extra environment for the process (essaimd reads some settings from it).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon named `name` with its state in `root/name`.
    ///
    /// # Errors
    /// The daemon could not be spawned or its socket never appeared.
    pub fn start(root: &Path, name: &str) -> Result<Daemon> {
        Daemon::start_with_env(root, name, &[])
    }

    /// Starts a daemon with extra environment variables, such as
    /// `ESSAIM_RAFT_SNAPSHOT_INTERVAL`.
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub fn start_with_env(root: &Path, name: &str, env: &[(&str, &str)]) -> Result<Daemon> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut daemon = Daemon {
            name: name.to_string(),
            port: free_port(),
            dir,
            host: "127.0.0.1".into(),
            netns: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    /// Starts a daemon in the network namespace `netns`, on the address `host` there, with
    /// extra environment variables.
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub fn start_in_netns(
        root: &Path,
        name: &str,
        netns: &str,
        host: &str,
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut daemon = Daemon {
            name: name.to_string(),
            // Alone in its namespace: any port is free there.
            port: 2377,
            dir,
            host: host.to_string(),
            netns: Some(netns.to_string()),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        daemon.spawn()?;
        Ok(daemon)
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("essaim.sock")
    }

    /// The node's data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Where the node keeps its certificate, key and trusted roots.
    pub fn certificates(&self) -> PathBuf {
        self.dir.join("data").join("certificates")
    }

    /// Runs `essaim --tls-dir BUNDLE -H tcp://ADDR ARGS...` against this daemon's cluster port,
    /// as a remote operator would.
    pub fn essaim_remote(&self, bundle: &Path, args: &[&str]) -> Output {
        Command::new(essaim_path())
            .arg("--tls-dir")
            .arg(bundle)
            .arg("-H")
            .arg(format!("tcp://{}", self.addr()))
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("essaim runs")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("essaimd.log")
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = match &self.netns {
            // `ip netns exec` enters the namespace and becomes essaimd (the same process).
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(essaimd_path());
                command
            }
            None => Command::new(essaimd_path()),
        };
        let child = die_with_parent(&mut command)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-addr")
            .arg(self.addr())
            .arg("--socket")
            .arg(self.socket())
            .arg("--hostname")
            .arg(&self.name)
            .env(
                "RUST_LOG",
                std::env::var("ESSAIM_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            // Tests run tasks as processes unless they ask for Docker.
            .env("ESSAIM_RUNTIME", "process")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn essaimd")?;
        self.child = Some(child);
        let socket = self.socket();
        wait_for("the daemon's socket", Duration::from_secs(20), || {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("essaimd exited early with {status}:\n{}", self.logs());
                }
            }
            Ok(std::os::unix::net::UnixStream::connect(&socket)
                .ok()
                .map(|_| ()))
        })
    }

    /// The daemon's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// How many bytes the daemon has logged so far, without reading them.
    pub fn log_len(&self) -> usize {
        std::fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize)
    }

    /// Kills the process at once, as a crash or power cut would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (SIGSTOP): it keeps its sockets and tasks but answers nothing, as a
    /// node cut off by the network would.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a frozen process go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Stops the process with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: sending a signal to our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same port and data directory.
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// The process ID, while the process runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs `essaim -H unix://SOCKET ARGS...` against this daemon.
    pub fn essaim(&self, args: &[&str]) -> Output {
        Command::new(essaim_path())
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("essaim runs")
    }

    /// Creates a service no node may run (a constraint no node meets): its one task stays
    /// pending, so a wait for it never converges.
    ///
    /// # Errors
    /// The create failed.
    pub fn create_stuck_service(&self, name: &str) -> Result<()> {
        self.ok(&[
            "service",
            "create",
            "--detach",
            "--name",
            name,
            "--constraint",
            "node.labels.zone==nowhere",
            "sleep",
            "3600",
        ])
        .map(drop)
    }

    /// Runs a command that must succeed and returns its standard output.
    ///
    /// # Errors
    /// The command failed; the error carries its exit code and standard error.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.essaim(args);
        if !out.status.success() {
            return Err(anyhow!(
                "essaim {} on {} failed ({}): {}",
                args.join(" "),
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a command with `--format json` appended and parses its output.
    ///
    /// # Errors
    /// The command failed or printed something that is not JSON.
    pub fn json(&self, args: &[&str]) -> Result<Value> {
        let mut full = args.to_vec();
        full.extend(["--format", "json"]);
        let text = self.ok(&full)?;
        serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
    }

    /// Sends one control request to this daemon's local socket, as the shell does.
    ///
    /// # Errors
    /// The daemon refused the request or could not be reached.
    pub fn control(
        &self,
        request: &essaim_api::ControlRequest,
    ) -> Result<essaim_api::ControlReply, essaim_api::ControlError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let channel = essaim_api::transport::local_channel(&self.socket()).await?;
            let mut client = essaim_api::transport::control_client(channel);
            essaim_api::transport::call(&mut client, request).await
        })
    }

    /// The tasks of `service`, as `service ps -a` lists them.
    ///
    /// # Errors
    /// The daemon refused or could not be reached.
    pub fn tasks(&self, service: &str) -> Result<Vec<essaim_api::control::TaskView>> {
        match self.control(&essaim_api::ControlRequest::TaskList {
            service: Some(service.to_string()),
            node: None,
        })? {
            essaim_api::ControlReply::Tasks(tasks) => Ok(tasks),
            other => bail!("unexpected reply {other:?}"),
        }
    }

    /// Joins the swarm of the manager at `manager` with `token`, advertising its own address.
    ///
    /// # Errors
    /// The join failed.
    pub fn join(&self, token: &str, manager: &str) -> Result<()> {
        let addr = self.addr();
        self.ok(&[
            "swarm",
            "join",
            "--token",
            token.trim(),
            "--advertise-addr",
            &addr,
            manager,
        ])?;
        Ok(())
    }

    /// The first virtual IP of `service`, from `service inspect`.
    ///
    /// # Errors
    /// The service has none, or the command failed.
    pub fn virtual_ip(&self, service: &str) -> Result<std::net::Ipv4Addr> {
        fn find(value: &Value) -> Option<&Value> {
            match value {
                Value::Object(fields) => fields
                    .get("virtual_ips")
                    .or_else(|| fields.values().find_map(find)),
                Value::Array(items) => items.iter().find_map(find),
                _ => None,
            }
        }
        let inspected = self.json(&["service", "inspect", service])?;
        let address = find(&inspected)
            .and_then(|vips| vips.get(0)?.get("address")?.as_str())
            .with_context(|| format!("no VIP in service inspect {service}: {inspected}"))?;
        Ok(address.parse()?)
    }

    /// This daemon's node ID.
    ///
    /// # Errors
    /// The daemon does not answer or is in no swarm.
    pub fn node_id(&self) -> Result<String> {
        let info = self.json(&["info"])?;
        info["node_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{} is in no swarm: {info}", self.name))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The tasks the managers want running and that their node reported running.
pub fn running(tasks: &[essaim_api::control::TaskView]) -> Vec<&essaim_api::control::TaskView> {
    use essaim_core::model::TaskState;
    tasks
        .iter()
        .filter(|t| {
            t.task.desired_state == TaskState::Running && t.task.status.state == TaskState::Running
        })
        .collect()
}

/// A set of daemons in one temporary directory, deleted at the end.
pub struct Cluster {
    pub nodes: Vec<Daemon>,
    root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `managers` managers and `workers` workers: the first initializes the swarm, the
    /// others join it with the right token. Names are m1.. and w1...
    ///
    /// # Errors
    /// Any step of the set-up failed.
    pub fn start(managers: usize, workers: usize) -> Result<Cluster> {
        let root = tempfile::Builder::new().prefix("essaim-e2e-").tempdir()?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            root,
        };
        for i in 1..=managers {
            cluster
                .nodes
                .push(Daemon::start(cluster.root.path(), &format!("m{i}"))?);
        }
        for i in 1..=workers {
            cluster
                .nodes
                .push(Daemon::start(cluster.root.path(), &format!("w{i}"))?);
        }
        if managers == 0 {
            return Ok(cluster);
        }
        let first = &cluster.nodes[0];
        first.ok(&["swarm", "init", "--advertise-addr", &first.addr()])?;
        let manager_token = first.ok(&["swarm", "join-token", "-q", "manager"])?;
        let worker_token = first.ok(&["swarm", "join-token", "-q", "worker"])?;
        let leader_addr = first.addr();
        for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
            let token = if i < managers {
                &manager_token
            } else {
                &worker_token
            };
            node.join(token, &leader_addr)?;
        }
        Ok(cluster)
    }

    /// An empty set of daemons, to start by hand.
    ///
    /// # Errors
    /// The temporary directory cannot be made.
    pub fn empty() -> Result<Cluster> {
        Ok(Cluster {
            nodes: Vec::new(),
            root: tempfile::Builder::new().prefix("essaim-e2e-").tempdir()?,
        })
    }

    /// Starts one more daemon, not yet in any swarm.
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub fn add(&mut self, name: &str) -> Result<&mut Daemon> {
        self.add_with_env(name, &[])
    }

    /// Starts one more daemon, not yet in any swarm, with extra environment variables.
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub fn add_with_env(&mut self, name: &str, env: &[(&str, &str)]) -> Result<&mut Daemon> {
        let daemon = Daemon::start_with_env(self.root.path(), name, env)?;
        self.nodes.push(daemon);
        Ok(self.nodes.last_mut().expect("just pushed"))
    }

    /// The directory under which every daemon of the cluster keeps its state; tests may put
    /// files of their own there.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Starts one more daemon, not yet in any swarm, in the network namespace `netns` on the
    /// address `host`, with extra environment variables.
    ///
    /// # Errors
    /// As [`Daemon::start`].
    pub fn add_in_netns(
        &mut self,
        name: &str,
        netns: &str,
        host: &str,
        env: &[(&str, &str)],
    ) -> Result<&mut Daemon> {
        let daemon = Daemon::start_in_netns(self.root.path(), name, netns, host, env)?;
        self.nodes.push(daemon);
        Ok(self.nodes.last_mut().expect("just pushed"))
    }

    /// Starts one more daemon and joins it to the swarm as a worker, through m1.
    ///
    /// # Errors
    /// The daemon did not start or the join failed.
    pub fn add_worker(&mut self, name: &str) -> Result<&mut Daemon> {
        self.add_worker_of("m1", name)
    }

    /// Starts one more daemon and joins it to the swarm as a worker, through `manager`.
    ///
    /// # Errors
    /// The daemon did not start or the join failed.
    pub fn add_worker_of(&mut self, manager: &str, name: &str) -> Result<&mut Daemon> {
        let first = self.node(manager);
        let token = first.ok(&["swarm", "join-token", "-q", "worker"])?;
        let manager = first.addr();
        let node = self.add(name)?;
        node.join(&token, &manager)?;
        Ok(node)
    }

    pub fn node(&self, name: &str) -> &Daemon {
        self.nodes
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no daemon named {name}"))
    }

    pub fn node_mut(&mut self, name: &str) -> &mut Daemon {
        self.nodes
            .iter_mut()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no daemon named {name}"))
    }

    /// The `node ls` rows as JSON, asked of `via`.
    ///
    /// # Errors
    /// The command failed.
    pub fn node_list(&self, via: &str) -> Result<Vec<Value>> {
        match self.node(via).json(&["node", "ls"])? {
            Value::Array(rows) => Ok(rows),
            other => bail!("node ls did not print an array: {other}"),
        }
    }

    /// The hostname of the current leader, as seen from `via`.
    ///
    /// # Errors
    /// No leader is known, or the command failed.
    pub fn leader(&self, via: &str) -> Result<String> {
        self.node_list(via)?
            .iter()
            .find(|n| n["manager_status"]["leader"] == Value::Bool(true))
            .and_then(|n| n["description"]["hostname"].as_str().map(str::to_string))
            .ok_or_else(|| anyhow!("no leader in node ls"))
    }

    /// Waits until `node ls` seen from `via` satisfies `check`.
    ///
    /// # Errors
    /// It never did within the timeout.
    pub fn wait_for_nodes(
        &self,
        via: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        wait_for(what, timeout, || {
            let nodes = self.node_list(via)?;
            Ok(check(&nodes).then_some(nodes))
        })
    }
}

/// Finds a node row by hostname.
pub fn row<'a>(nodes: &'a [Value], hostname: &str) -> Option<&'a Value> {
    nodes
        .iter()
        .find(|n| n["description"]["hostname"] == Value::String(hostname.to_string()))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // ESSAIM_KEEP_LOGS=DIR keeps every daemon's log, for a look after the fact.
        if let Some(dir) = std::env::var_os("ESSAIM_KEEP_LOGS") {
            let dir = PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            for node in &self.nodes {
                let _ = std::fs::write(dir.join(format!("{}.log", node.name)), node.logs());
            }
        }
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!("===== logs of {} =====\n{}", node.name, node.logs());
            }
        }
        for node in &mut self.nodes {
            node.kill9();
        }
        // The secrets and configs the nodes' tasks had, in memory, which a killed daemon
        // leaves behind.
        let _ = std::fs::remove_dir_all(task_files_of(self.root.path()));
    }
}

/// Where the daemons whose directories are under `dir` keep their tasks' secrets and configs:
/// the path under `/dev/shm/essaim`, as `essaim_worker::task_files::root_for` makes it.
pub fn task_files_of(dir: &Path) -> PathBuf {
    Path::new("/dev/shm/essaim").join(dir.strip_prefix("/").unwrap_or(dir))
}

/// Every file under `dir` that holds `needle`, by path: where a secret must not be.
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}
