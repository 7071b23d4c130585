//! One compose service as the service spec `stack deploy` creates: every key Docker maps in a
//! stack, read with its place in the file for any complaint.

use std::collections::BTreeMap;

use essaim_core::model::{
    signal_number, Checkpoint, EndpointMode, FailureAction, FileKind, FileReference, HealthCheck,
    HostMapping, Mount, MountKind, NetworkAttachmentConfig, PortConfig, Protocol, PublishMode,
    Resources, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, TaskSpec, UpdateConfig,
    UpdateOrder, DEFAULT_FILE_MODE,
};
use essaim_core::units::{parse_cpus, parse_memory};

use super::read::{join, Reader, Support};
use super::yaml::{Node, Position, Value};
use super::{env_file, StackVolume, NAMESPACE_LABEL};

/// What the conversion of a service needs from the rest of the file.
pub struct Context<'a> {
    pub stack: &'a str,
    /// The file's networks: the key services name them by, and the cluster network's name.
    pub networks: &'a BTreeMap<String, String>,
    /// A variable of the environment, for an `environment:` key given without a value.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Reads an `env_file:`, as given (relative to the first compose file's directory).
    pub read_env_file: &'a dyn Fn(&str) -> Result<String, String>,
    /// The file's named volumes, by their key.
    pub volumes: &'a BTreeMap<String, StackVolume>,
    /// The file's secrets and configs: the key services name them by, and the cluster's name.
    pub secrets: &'a BTreeMap<String, String>,
    pub configs: &'a BTreeMap<String, String>,
    /// Where relative bind sources are from.
    pub base_dir: &'a std::path::Path,
}

/// What the keys of a service do in a stack.
fn service_key(key: &str) -> Option<Support> {
    const DOCKER_IGNORES: &str = "ignored: stack deploy does not use it, as Docker's does not";
    Some(match key {
        "image" | "command" | "environment" | "env_file" | "deploy" | "ports" | "networks"
        | "healthcheck" | "stop_grace_period" => Support::Read,
        "entrypoint" | "labels" | "user" | "working_dir" | "hostname" | "dns" | "dns_search"
        | "dns_opt" | "extra_hosts" | "stop_signal" | "cap_add" | "cap_drop" | "init" | "tty"
        | "read_only" => Support::Read,
        "build" | "container_name" | "depends_on" | "links" | "external_links" | "expose"
        | "restart" | "cgroup_parent" | "cgroupns_mode" | "domainname" | "mac_address"
        | "profiles" | "platform" | "pull_policy" => Support::Ignored(DOCKER_IGNORES),
        "volumes" | "tmpfs" | "secrets" | "configs" => Support::Read,
        "sysctls" | "ulimits" | "stdin_open" | "logging" | "isolation" | "shm_size"
        | "privileged" | "devices" | "network_mode" | "pid" | "ipc" | "security_opt"
        | "userns_mode" | "oom_score_adj" | "group_add" | "scale" => Support::NotYet(
            "not supported yet: essaim would run the task without it, so the stack is refused",
        ),
        _ => return None,
    })
}

/// The spec of the compose service `short` (its key under `services:`, at `key_at`), or None
/// with the errors in `reader`.
pub fn convert(
    reader: &mut Reader,
    short: &str,
    key_at: &Position,
    node: &Node,
    context: &Context<'_>,
) -> Option<ServiceSpec> {
    let path = join("services", short);
    let errors_before = reader.errors.len();
    let mut spec = ServiceSpec {
        name: format!("{}_{short}", context.stack),
        labels: BTreeMap::new(),
        mode: ServiceMode::Replicated { replicas: 1 },
        task: TaskSpec {
            stop_grace_period_ms: super::DEFAULT_STOP_GRACE_MS,
            restart_policy: RestartPolicy::default(),
            ..TaskSpec::default()
        },
        ports: Vec::new(),
        update_config: UpdateConfig::default(),
        rollback_config: UpdateConfig::default(),
        endpoint_mode: EndpointMode::default(),
    };
    let mut image = None;
    let mut networks = None;
    let mut env_files = Vec::new();
    let mut environment = Vec::new();
    // Where each key's value is, for the leader's checks of the whole spec (see below).
    let mut places: BTreeMap<String, Position> = BTreeMap::new();
    for entry in reader.mapping(node, &path, &service_key) {
        let key_path = join(&path, &entry.key);
        let value = &entry.value;
        places.insert(entry.key.clone(), value.at.clone());
        let options = &mut spec.task.container;
        match entry.key.as_str() {
            "entrypoint" => {
                options.entrypoint = reader.command(value, &key_path).unwrap_or_default()
            }
            "labels" => options.labels = reader.labels(value, &key_path),
            "user" => options.user = reader.string(value, &key_path).unwrap_or_default(),
            "working_dir" => options.workdir = reader.string(value, &key_path).unwrap_or_default(),
            "hostname" => options.hostname = reader.string(value, &key_path).unwrap_or_default(),
            "stop_signal" => {
                options.stop_signal = reader
                    .parsed(value, &key_path, |text| {
                        signal_number(text)
                            .map(|_| text.to_string())
                            .ok_or_else(|| format!("unknown signal '{text}'"))
                    })
                    .unwrap_or_default();
            }
            "dns" => {
                options.dns = each(reader, value, &key_path, |text| {
                    text.parse()
                        .map_err(|_| format!("'{text}' is not an IP address"))
                });
            }
            "dns_search" => {
                options.dns_search = reader.strings(value, &key_path).unwrap_or_default()
            }
            "dns_opt" => options.dns_options = reader.strings(value, &key_path).unwrap_or_default(),
            "extra_hosts" => options.hosts = extra_hosts(reader, value, &key_path),
            "cap_add" => options.cap_add = reader.strings(value, &key_path).unwrap_or_default(),
            "cap_drop" => options.cap_drop = reader.strings(value, &key_path).unwrap_or_default(),
            "init" => options.init = reader.boolean(value, &key_path).unwrap_or_default(),
            "tty" => options.tty = reader.boolean(value, &key_path).unwrap_or_default(),
            "read_only" => options.read_only = reader.boolean(value, &key_path).unwrap_or_default(),
            "volumes" => spec
                .task
                .mounts
                .extend(mounts(reader, value, &key_path, context)),
            "tmpfs" => {
                for target in reader.strings(value, &key_path).unwrap_or_default() {
                    spec.task.mounts.push(Mount {
                        kind: MountKind::Tmpfs,
                        source: String::new(),
                        target,
                        read_only: false,
                        volume_labels: BTreeMap::new(),
                        tmpfs_size: 0,
                    });
                }
            }
            "secrets" => {
                spec.task.secrets =
                    file_references(reader, value, &key_path, FileKind::Secret, context.secrets);
            }
            "configs" => {
                spec.task.configs =
                    file_references(reader, value, &key_path, FileKind::Config, context.configs);
            }
            "image" => image = reader.string(value, &key_path),
            "command" => spec.task.args = reader.command(value, &key_path).unwrap_or_default(),
            "environment" => environment = reader.key_values(value, &key_path),
            "env_file" => env_files = env_file_entries(reader, value, &key_path),
            "deploy" => deploy(reader, value, &key_path, &mut spec),
            "ports" => spec.ports = ports(reader, value, &key_path),
            "networks" => networks = Some(attachments(reader, value, &key_path, short, context)),
            "healthcheck" => spec.task.healthcheck = healthcheck(reader, value, &key_path),
            "stop_grace_period" => {
                if let Some(ms) = reader.duration_ms(value, &key_path) {
                    spec.task.stop_grace_period_ms = ms;
                }
            }
            _ => {}
        }
    }
    match image {
        Some(image) if !image.trim().is_empty() => spec.task.image = image,
        Some(_) => reader.error(key_at, &join(&path, "image"), "the image is empty"),
        None => reader.error(
            key_at,
            &path,
            "no image: a stack runs images and builds none, so each service needs 'image:'",
        ),
    }
    // env_file first, then environment over it, as Compose orders them.
    for (file, at) in env_files {
        match (context.read_env_file)(&file)
            .and_then(|text| env_file::parse(&text).map_err(|error| format!("{file}: {error}")))
        {
            Ok(variables) => {
                for variable in variables {
                    if let Some(value) = variable.value.or_else(|| (context.lookup)(&variable.name))
                    {
                        spec.task.env.insert(variable.name, value);
                    }
                }
            }
            Err(message) => reader.error(&at, &join(&path, "env_file"), message),
        }
    }
    for (key, value) in environment {
        // A key with no value takes it from the environment, or is left out when unset.
        match value.or_else(|| (context.lookup)(&key)) {
            Some(value) => {
                spec.task.env.insert(key, value);
            }
            None => {
                spec.task.env.remove(&key);
            }
        }
    }
    spec.task.networks = networks.unwrap_or_else(|| {
        // No networks named: the stack's default network, as Docker does.
        context
            .networks
            .get("default")
            .map(|name| vec![attachment(name, short, Vec::new())])
            .unwrap_or_default()
    });
    // A job's tasks that completed are done: only failures are retried, unless the file
    // says otherwise (Swarm's default for jobs).
    if spec.mode.is_job() && spec.task.restart_policy == RestartPolicy::default() {
        spec.task.restart_policy.condition = RestartCondition::OnFailure;
    }
    // On the service and on its containers, as Docker labels them: `docker ps --filter
    // label=com.docker.stack.namespace=NAME` finds a stack's containers.
    for labels in [&mut spec.labels, &mut spec.task.container.labels] {
        labels.insert(NAMESPACE_LABEL.to_string(), context.stack.to_string());
    }
    if reader.errors.len() > errors_before {
        return None;
    }
    // What the leader would refuse, refused here, at the key's place: the whole file is
    // checked before anything is written.
    if let Err(error) = spec.validate() {
        let key = compose_key(&error.field);
        let at = key.and_then(|key| places.get(key)).unwrap_or(key_at);
        let key_path = key.map_or(path.clone(), |key| join(&path, key));
        reader.error(at, &key_path, error.message);
        return None;
    }
    Some(spec)
}

/// The compose key of a flag that a spec's check names, where the key is the service's own.
fn compose_key(flag: &str) -> Option<&'static str> {
    Some(match flag {
        "IMAGE" => "image",
        "--env" => "environment",
        "--entrypoint" => "entrypoint",
        "--user" => "user",
        "--workdir" => "working_dir",
        "--hostname" => "hostname",
        "--dns-search" => "dns_search",
        "--dns-option" => "dns_opt",
        "--host" => "extra_hosts",
        "--container-label" => "labels",
        "--stop-signal" => "stop_signal",
        "--cap-add" => "cap_add",
        "--cap-drop" => "cap_drop",
        "--publish" => "ports",
        "--mount" => "volumes",
        "--secret" => "secrets",
        "--config" => "configs",
        "--constraint" | "--placement-pref" | "--reserve-memory" | "--reserve-cpu"
        | "update_config" | "rollback_config" => "deploy",
        _ => return None,
    })
}

/// A service's `secrets:` or `configs:`: the short syntax (keys of the file's top-level
/// section) and the long one (`source`, `target`, `uid`, `gid`, `mode`). Each names the
/// cluster's object (`STACK_KEY` for the stack's own, as `declared` maps them) and is seen at
/// its key (`/run/secrets/KEY`, `/KEY`) unless `target` says otherwise, as in Docker.
fn file_references(
    reader: &mut Reader,
    node: &Node,
    path: &str,
    kind: FileKind,
    declared: &BTreeMap<String, String>,
) -> Vec<FileReference> {
    let Value::Sequence(items) = &node.value else {
        reader.error(
            &node.at,
            path,
            format!("expected a list of {kind}s, found {}", node.kind()),
        );
        return Vec::new();
    };
    let support = |key: &str| match key {
        "source" | "target" | "uid" | "gid" | "mode" => Some(Support::Read),
        _ => None,
    };
    let id = |text: &str| {
        text.trim()
            .parse::<u32>()
            .map_err(|_| format!("expected a numeric ID, found '{text}'"))
    };
    let mut references = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let mut reference = FileReference::new(String::new());
        // The key it names, where, and the path to say.
        let mut key = None;
        if let Value::Mapping(_) = &item.value {
            for option in reader.mapping(item, &item_path, &support) {
                let option_path = join(&item_path, &option.key);
                let value = &option.value;
                match option.key.as_str() {
                    "source" => {
                        key = reader
                            .string(value, &option_path)
                            .map(|source| (source, &value.at, option_path));
                    }
                    "target" => {
                        reference.target = reader.string(value, &option_path).unwrap_or_default();
                    }
                    "uid" => reference.uid = reader.parsed(value, &option_path, id).unwrap_or(0),
                    "gid" => reference.gid = reader.parsed(value, &option_path, id).unwrap_or(0),
                    _ => {
                        reference.mode = reader
                            .parsed(value, &option_path, file_mode)
                            .unwrap_or(DEFAULT_FILE_MODE);
                    }
                }
            }
            if key.is_none() && item.get("source").is_none() {
                reader.error(
                    &item.at,
                    &item_path,
                    format!("no source: name the {kind}, as 'source: KEY'"),
                );
            }
        } else {
            key = reader
                .string(item, &item_path)
                .map(|source| (source, &item.at, item_path.clone()));
        }
        let Some((key, at, key_path)) = key else {
            continue;
        };
        let Some(name) = declared.get(&key) else {
            reader.error(
                at,
                &key_path,
                format!(
                    "the {kind} '{key}' is not declared under the file's '{}:'",
                    super::section(kind)
                ),
            );
            continue;
        };
        reference.source.clone_from(name);
        if reference.target.is_empty() {
            // The key, not the cluster's STACK_KEY: /run/secrets/KEY, as Docker has it.
            reference.target = match kind {
                FileKind::Secret => key,
                FileKind::Config => format!("/{key}"),
            };
        }
        references.push(reference);
    }
    references
}

/// A secret's or config's `mode:` as Docker's compose reads it: `0440` is octal (YAML 1.1's
/// leading zero, and `0o440`), `288` decimal.
fn file_mode(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let (digits, radix) = match text.strip_prefix("0o") {
        Some(octal) => (octal, 8),
        None if text.len() > 1 && text.starts_with('0') => (&text[1..], 8),
        None => (text, 10),
    };
    match u32::from_str_radix(digits, radix) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        Ok(_) => Err(format!(
            "'{text}' is beyond the permission bits (0777): write the mode in octal, as 0440"
        )),
        Err(_) => Err(format!(
            "'{text}' is not a file mode: write it in octal, as 0440"
        )),
    }
}

/// A service's `volumes:`: the short syntax (`data:/var/lib/db`, `./site:/www:ro`, `/cache`)
/// and the long one (`type`, `source`, `target`, `read_only`, `volume`, `tmpfs`). A named
/// volume must be declared under the file's `volumes:`, and is the stack's (`STACK_KEY`);
/// a relative bind source is from the first file's directory.
fn mounts(reader: &mut Reader, node: &Node, path: &str, context: &Context<'_>) -> Vec<Mount> {
    let Value::Sequence(items) = &node.value else {
        reader.error(&node.at, path, "expected a list of volumes");
        return Vec::new();
    };
    let mut mounts = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let mount = match &item.value {
            Value::Mapping(_) => long_mount(reader, item, &item_path, context),
            _ => reader
                .parsed(item, &item_path, |text| short_mount(text, context))
                .flatten(),
        };
        mounts.extend(mount);
    }
    mounts
}

fn empty_mount(kind: MountKind) -> Mount {
    Mount {
        kind,
        source: String::new(),
        target: String::new(),
        read_only: false,
        volume_labels: BTreeMap::new(),
        tmpfs_size: 0,
    }
}

/// A source as a mount: a path (`/`, `.`, `~` first) is a bind, anything else a volume of
/// the file's.
fn mount_source(mount: &mut Mount, source: &str, context: &Context<'_>) -> Result<(), String> {
    if source.starts_with(['/', '.', '~']) {
        mount.kind = MountKind::Bind;
        let path = match source.strip_prefix('~') {
            Some(rest) => {
                let home = std::env::var("HOME").map_err(|_| "~: HOME is not set".to_string())?;
                format!("{home}{rest}")
            }
            None => source.to_string(),
        };
        let full = super::in_base_dir(context.base_dir, std::path::Path::new(&path));
        mount.source = full
            .display()
            .to_string()
            .trim_end_matches("/.")
            .to_string();
        return Ok(());
    }
    let volume = context.volumes.get(source).ok_or_else(|| {
        format!("the volume '{source}' is not declared under the file's 'volumes:'")
    })?;
    mount.kind = MountKind::Volume;
    mount.source.clone_from(&volume.name);
    mount.volume_labels.clone_from(&volume.labels);
    Ok(())
}

/// `SOURCE:TARGET[:MODE]` or `TARGET` alone (a volume of the task's own).
fn short_mount(text: &str, context: &Context<'_>) -> Result<Option<Mount>, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let mut mount = empty_mount(MountKind::Volume);
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, mode] => (Some(*source), *target, Some(*mode)),
        _ => return Err(format!("'{text}' is not SOURCE:TARGET[:MODE]")),
    };
    mount.target = target.to_string();
    if let Some(source) = source {
        mount_source(&mut mount, source, context)?;
    }
    for flag in mode
        .unwrap_or_default()
        .split(',')
        .filter(|f| !f.is_empty())
    {
        match flag {
            "ro" => mount.read_only = true,
            "rw" => mount.read_only = false,
            // Docker for Mac's consistency hints; nothing on Linux.
            "cached" | "delegated" | "consistent" => {}
            other => return Err(format!("not supported yet: the mode '{other}' in '{text}'")),
        }
    }
    Ok(Some(mount))
}

fn long_mount(
    reader: &mut Reader,
    node: &Node,
    path: &str,
    context: &Context<'_>,
) -> Option<Mount> {
    let support = |key: &str| match key {
        "type" | "source" | "target" | "read_only" | "volume" | "tmpfs" => Some(Support::Read),
        "consistency" => Some(Support::Ignored("ignored: it means nothing on Linux")),
        "bind" => Some(Support::NotYet(
            "not supported yet: bind options (propagation, create_host_path)",
        )),
        _ => None,
    };
    let mut mount = empty_mount(MountKind::Volume);
    let mut typed = false;
    let mut source = None;
    let mut at = node.at.clone();
    for entry in reader.mapping(node, path, &support) {
        let key_path = join(path, &entry.key);
        let value = &entry.value;
        match entry.key.as_str() {
            "type" => {
                if let Some(kind) = reader.parsed(value, &key_path, |text| {
                    text.parse::<MountKind>().map_err(|e| e.to_string())
                }) {
                    mount.kind = kind;
                    typed = true;
                }
            }
            "source" => {
                source = reader.string(value, &key_path);
                at = value.at.clone();
            }
            "target" => mount.target = reader.string(value, &key_path).unwrap_or_default(),
            "read_only" => mount.read_only = reader.boolean(value, &key_path).unwrap_or_default(),
            "volume" => {
                let support = |key: &str| match key {
                    "nocopy" => Some(Support::NotYet(
                        "not supported yet: a new volume gets the image's files at the target",
                    )),
                    "subpath" => Some(Support::NotYet("not supported yet")),
                    _ => None,
                };
                reader.mapping(value, &key_path, &support);
            }
            "tmpfs" => {
                let support = |key: &str| match key {
                    "size" => Some(Support::Read),
                    "mode" => Some(Support::NotYet("not supported yet")),
                    _ => None,
                };
                for option in reader.mapping(value, &key_path, &support) {
                    let option_path = join(&key_path, &option.key);
                    if let Some(size) = reader.parsed(&option.value, &option_path, parse_memory) {
                        mount.tmpfs_size = size;
                    }
                }
            }
            _ => {}
        }
    }
    if mount.target.is_empty() {
        reader.error(&node.at, path, "a volume needs a target");
        return None;
    }
    if let Some(source) = source {
        let kind = mount.kind;
        if kind == MountKind::Tmpfs {
            reader.error(&at, &join(path, "source"), "a tmpfs has no source");
            return None;
        }
        if let Err(message) = mount_source(&mut mount, &source, context) {
            reader.error(&at, &join(path, "source"), message);
            return None;
        }
        // Without a type, the source says what it is, as in the short syntax.
        if typed && mount.kind != kind {
            let message = format!(
                "'{source}' is a {} source, and the type says {kind}",
                mount.kind
            );
            reader.error(&at, &join(path, "source"), message);
            return None;
        }
    }
    Some(mount)
}

/// A list of values each read by `parse` at its own place, or one value alone.
fn each<T>(
    reader: &mut Reader,
    node: &Node,
    path: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    match &node.value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| reader.parsed(item, &format!("{path}[{index}]"), &parse))
            .collect(),
        _ => reader.parsed(node, path, &parse).into_iter().collect(),
    }
}

/// `extra_hosts:` as a list of `HOST:IP` (or `HOST=IP`), or a mapping of host to address.
fn extra_hosts(reader: &mut Reader, node: &Node, path: &str) -> Vec<HostMapping> {
    match &node.value {
        Value::Mapping(entries) => entries
            .iter()
            .filter_map(|entry| {
                let key_path = join(path, &entry.key);
                reader.parsed(&entry.value, &key_path, |address| {
                    format!("{}:{address}", entry.key).parse::<HostMapping>()
                })
            })
            .collect(),
        _ => each(reader, node, path, |text| text.parse::<HostMapping>()),
    }
}

/// Joins `network`, reachable there by the service's short compose name (and `aliases`), so
/// that `api` finds `shop_api` from the other services of the stack.
fn attachment(network: &str, short: &str, mut aliases: Vec<String>) -> NetworkAttachmentConfig {
    if !aliases.iter().any(|alias| alias == short) {
        aliases.insert(0, short.to_string());
    }
    NetworkAttachmentConfig {
        target: network.to_string(),
        aliases,
    }
}

fn attachments(
    reader: &mut Reader,
    node: &Node,
    path: &str,
    short: &str,
    context: &Context<'_>,
) -> Vec<NetworkAttachmentConfig> {
    // A list of keys, or a mapping of key to null or to its options.
    let named: Vec<(String, Option<&Node>, &Node)> = match &node.value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| {
                let name = reader.string(item, &format!("{path}[{index}]"))?;
                Some((name, None, item))
            })
            .collect(),
        Value::Mapping(entries) => entries
            .iter()
            .map(|entry| (entry.key.clone(), Some(&entry.value), &entry.value))
            .collect(),
        _ => {
            reader.error(&node.at, path, "expected a list of networks or a mapping");
            return Vec::new();
        }
    };
    let mut attachments = Vec::new();
    for (name, options, at) in named {
        let key_path = join(path, &name);
        let Some(network) = context.networks.get(&name) else {
            reader.error(
                &at.at,
                &key_path,
                format!("the network '{name}' is not declared under the file's 'networks:'"),
            );
            continue;
        };
        let mut aliases = Vec::new();
        if let Some(options) = options {
            let support = |key: &str| match key {
                "aliases" => Some(Support::Read),
                "ipv4_address" | "ipv6_address" | "link_local_ips" | "priority" => Some(
                    Support::NotYet("not supported yet: addresses are the allocator's to give"),
                ),
                _ => None,
            };
            for entry in reader.mapping(options, &key_path, &support) {
                aliases = reader
                    .strings(&entry.value, &join(&key_path, "aliases"))
                    .unwrap_or_default();
            }
        }
        attachments.push(attachment(network, short, aliases));
    }
    attachments
}

fn env_file_entries(reader: &mut Reader, node: &Node, path: &str) -> Vec<(String, Position)> {
    let items: Vec<&Node> = match &node.value {
        Value::Sequence(items) => items.iter().collect(),
        _ => vec![node],
    };
    items
        .into_iter()
        .filter_map(|item| {
            // The long form's `path:` (Compose 2.24); `required: false` is not supported.
            let file = match item.get("path") {
                Some(entry) => reader.string(&entry.value, &join(path, "path")),
                None => reader.string(item, path),
            }?;
            Some((file, item.at.clone()))
        })
        .collect()
}

fn deploy(reader: &mut Reader, node: &Node, path: &str, spec: &mut ServiceSpec) {
    let support = |key: &str| match key {
        "mode" | "replicas" | "labels" | "resources" | "restart_policy" | "update_config"
        | "rollback_config" | "placement" | "endpoint_mode" => Some(Support::Read),
        _ => None,
    };
    let mut mode = None;
    let mut replicas = None;
    for entry in reader.mapping(node, path, &support) {
        let key_path = join(path, &entry.key);
        let value = &entry.value;
        match entry.key.as_str() {
            "mode" => mode = reader.string(value, &key_path).map(|m| (m, value)),
            "replicas" => replicas = reader.count(value, &key_path).map(|r| (r, value)),
            "labels" => spec.labels.extend(reader.labels(value, &key_path)),
            "resources" => resources(reader, value, &key_path, &mut spec.task.resources),
            "restart_policy" => {
                restart_policy(reader, value, &key_path, &mut spec.task.restart_policy);
            }
            "update_config" => update_config(reader, value, &key_path, &mut spec.update_config),
            "rollback_config" => {
                update_config(reader, value, &key_path, &mut spec.rollback_config);
            }
            "placement" => placement(reader, value, &key_path, &mut spec.task),
            "endpoint_mode" => {
                if let Some(endpoint_mode) = reader.parsed(value, &key_path, |text| {
                    text.parse::<EndpointMode>()
                        .map_err(|_| format!("'{text}' is not an endpoint mode: use vip or dnsrr"))
                }) {
                    spec.endpoint_mode = endpoint_mode;
                }
            }
            _ => {}
        }
    }
    let mode_path = join(path, "mode");
    spec.mode = match mode {
        None => ServiceMode::Replicated {
            replicas: replicas.map_or(1, |(replicas, _)| replicas),
        },
        Some((mode, at)) => match mode.as_str() {
            "replicated" => ServiceMode::Replicated {
                replicas: replicas.map_or(1, |(replicas, _)| replicas),
            },
            "replicated-job" => ServiceMode::ReplicatedJob {
                completions: replicas.map_or(1, |(replicas, _)| replicas),
                max_concurrent: 0,
            },
            global @ ("global" | "global-job") => {
                if let Some((_, at)) = replicas {
                    reader.error(
                        &at.at,
                        &join(path, "replicas"),
                        format!(
                            "replicas can only be used with mode replicated or \
                             replicated-job, not with mode {global}"
                        ),
                    );
                }
                if global == "global" {
                    ServiceMode::Global
                } else {
                    ServiceMode::GlobalJob
                }
            }
            other => {
                reader.error(
                    &at.at,
                    &mode_path,
                    format!(
                        "'{other}' is not a mode: use replicated, global, replicated-job or \
                         global-job"
                    ),
                );
                spec.mode
            }
        },
    };
}

/// A unit's parser: CPUs to billionths, memory to bytes.
type Parse = fn(&str) -> Result<u64, String>;

fn resources(reader: &mut Reader, node: &Node, path: &str, resources: &mut Resources) {
    let support = |key: &str| match key {
        "limits" | "reservations" => Some(Support::Read),
        _ => None,
    };
    for entry in reader.mapping(node, path, &support) {
        let key_path = join(path, &entry.key);
        let support = |key: &str| match key {
            "cpus" | "memory" => Some(Support::Read),
            "pids" | "devices" | "generic_resources" => Some(Support::NotYet(
                "not supported yet: essaim would run the task without it, so the stack is \
                 refused",
            )),
            _ => None,
        };
        let (cpus, memory) = if entry.key == "limits" {
            (
                &mut resources.limit_nano_cpus,
                &mut resources.limit_memory_bytes,
            )
        } else {
            (
                &mut resources.reserve_nano_cpus,
                &mut resources.reserve_memory_bytes,
            )
        };
        for entry in reader.mapping(&entry.value, &key_path, &support) {
            let value_path = join(&key_path, &entry.key);
            let (field, parse): (&mut u64, Parse) = match entry.key.as_str() {
                "cpus" => (&mut *cpus, parse_cpus),
                _ => (&mut *memory, parse_memory),
            };
            if let Some(value) = reader.parsed(&entry.value, &value_path, parse) {
                *field = value;
            }
        }
    }
}

fn restart_policy(reader: &mut Reader, node: &Node, path: &str, policy: &mut RestartPolicy) {
    let support = |key: &str| match key {
        "condition" | "delay" | "max_attempts" | "window" => Some(Support::Read),
        _ => None,
    };
    for entry in reader.mapping(node, path, &support) {
        let key_path = join(path, &entry.key);
        let value = &entry.value;
        match entry.key.as_str() {
            "condition" => {
                if let Some(condition) = reader.parsed(value, &key_path, |text| {
                    text.parse::<RestartCondition>().map_err(|_| {
                        format!("'{text}' is not a condition: use none, on-failure or any")
                    })
                }) {
                    policy.condition = condition;
                }
            }
            "delay" => policy.delay_ms = reader.duration_ms(value, &key_path).unwrap_or(0),
            "max_attempts" => policy.max_attempts = reader.count(value, &key_path).unwrap_or(0),
            "window" => policy.window_ms = reader.duration_ms(value, &key_path).unwrap_or(0),
            _ => {}
        }
    }
}

fn update_config(reader: &mut Reader, node: &Node, path: &str, config: &mut UpdateConfig) {
    let support = |key: &str| match key {
        "parallelism" | "delay" | "failure_action" | "monitor" | "max_failure_ratio" | "order" => {
            Some(Support::Read)
        }
        _ => None,
    };
    for entry in reader.mapping(node, path, &support) {
        let key_path = join(path, &entry.key);
        let value = &entry.value;
        match entry.key.as_str() {
            "parallelism" => config.parallelism = reader.count(value, &key_path).unwrap_or(1),
            "delay" => config.delay_ms = reader.duration_ms(value, &key_path).unwrap_or(0),
            "monitor" => {
                config.monitor_ms = reader
                    .duration_ms(value, &key_path)
                    .unwrap_or(config.monitor_ms);
            }
            "failure_action" => {
                if let Some(action) = reader.parsed(value, &key_path, |text| {
                    text.parse::<FailureAction>().map_err(|_| {
                        format!("'{text}' is not a failure action: use pause, continue or rollback")
                    })
                }) {
                    config.failure_action = action;
                }
            }
            "max_failure_ratio" => {
                if let Some(ratio) =
                    reader.parsed(value, &key_path, essaim_core::units::parse_ratio_permille)
                {
                    config.max_failure_ratio_permille = ratio;
                }
            }
            "order" => {
                if let Some(order) = reader.parsed(value, &key_path, |text| {
                    text.parse::<UpdateOrder>().map_err(|_| {
                        format!("'{text}' is not an order: use stop-first or start-first")
                    })
                }) {
                    config.order = order;
                }
            }
            _ => {}
        }
    }
    // `x-` keys are skipped by the mapping reader; essaim's checkpoint is read here.
    if let Some(entry) = node.get("x-pause-after") {
        config.pause_after = reader.parsed(&entry.value, &join(path, "x-pause-after"), |text| {
            text.parse::<Checkpoint>()
        });
    }
}

fn placement(reader: &mut Reader, node: &Node, path: &str, task: &mut TaskSpec) {
    let support = |key: &str| match key {
        "constraints" | "preferences" | "max_replicas_per_node" => Some(Support::Read),
        _ => None,
    };
    for entry in reader.mapping(node, path, &support) {
        let key_path = join(path, &entry.key);
        let value = &entry.value;
        match entry.key.as_str() {
            "constraints" => {
                task.constraints = reader.strings(value, &key_path).unwrap_or_default()
            }
            "max_replicas_per_node" => {
                task.max_replicas_per_node = reader.count(value, &key_path).unwrap_or(0);
            }
            "preferences" => {
                let Value::Sequence(items) = &value.value else {
                    reader.error(&value.at, &key_path, "expected a list of {spread: LABEL}");
                    continue;
                };
                for (index, item) in items.iter().enumerate() {
                    let item_path = format!("{key_path}[{index}]");
                    let support = |key: &str| (key == "spread").then_some(Support::Read);
                    for entry in reader.mapping(item, &item_path, &support) {
                        if let Some(label) =
                            reader.string(&entry.value, &join(&item_path, "spread"))
                        {
                            task.spread.push(label);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn ports(reader: &mut Reader, node: &Node, path: &str) -> Vec<PortConfig> {
    let Value::Sequence(items) = &node.value else {
        reader.error(
            &node.at,
            path,
            format!("expected a list of ports, found {}", node.kind()),
        );
        return Vec::new();
    };
    let mut ports = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        let port = match &item.value {
            Value::Mapping(_) => long_port(reader, item, &item_path),
            _ => reader.parsed(item, &item_path, short_port),
        };
        ports.extend(port);
    }
    ports
}

/// `"8080:80"`, `"80"`, `"8080:80/udp"`: ingress ports, as Swarm makes them.
fn short_port(text: &str) -> Result<PortConfig, String> {
    let (ports, _) = text.split_once('/').unwrap_or((text, ""));
    if ports.contains('-') {
        return Err(format!(
            "'{text}': port ranges are not supported yet; list each port"
        ));
    }
    if ports.matches(':').count() > 1 {
        return Err(format!(
            "'{text}': a host address is not supported: an ingress port listens on every node"
        ));
    }
    essaim_core::units::parse_port(text)
}

fn long_port(reader: &mut Reader, node: &Node, path: &str) -> Option<PortConfig> {
    let support = |key: &str| match key {
        "target" | "published" | "protocol" | "mode" => Some(Support::Read),
        "host_ip" | "name" | "app_protocol" => Some(Support::NotYet(
            "not supported yet: essaim would publish the port without it",
        )),
        _ => None,
    };
    let mut port = PortConfig::tcp(0, 0);
    let errors_before = reader.errors.len();
    let port_number = |text: &str| -> Result<u16, String> {
        match text.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!(
                "'{text}' is not a port: use a number from 1 to 65535"
            )),
            Ok(port) => Ok(port),
        }
    };
    for entry in reader.mapping(node, path, &support) {
        let key_path = join(path, &entry.key);
        let value = &entry.value;
        match entry.key.as_str() {
            "target" => port.target = reader.parsed(value, &key_path, port_number).unwrap_or(0),
            "published" => {
                port.published = reader.parsed(value, &key_path, port_number).unwrap_or(0);
            }
            "protocol" => {
                port.protocol = reader
                    .parsed(value, &key_path, |text| {
                        text.parse::<Protocol>()
                            .map_err(|_| format!("'{text}' is not a protocol: use tcp or udp"))
                    })
                    .unwrap_or_default();
            }
            "mode" => {
                port.mode = reader
                    .parsed(value, &key_path, |text| {
                        text.parse::<PublishMode>()
                            .map_err(|_| format!("'{text}' is not a mode: use ingress or host"))
                    })
                    .unwrap_or_default();
            }
            _ => {}
        }
    }
    if port.target == 0 && reader.errors.len() == errors_before {
        reader.error(&node.at, path, "target: the container's port is required");
    }
    (reader.errors.len() == errors_before).then_some(port)
}

fn healthcheck(reader: &mut Reader, node: &Node, path: &str) -> Option<HealthCheck> {
    let support = |key: &str| match key {
        "test" | "interval" | "timeout" | "retries" | "start_period" | "disable" => {
            Some(Support::Read)
        }
        "start_interval" => Some(Support::NotYet(
            "not supported yet: the checks would run at 'interval' during the start period",
        )),
        _ => None,
    };
    let mut check = HealthCheck::default();
    let mut disabled = false;
    for entry in reader.mapping(node, path, &support) {
        let key_path = join(path, &entry.key);
        let value = &entry.value;
        match entry.key.as_str() {
            "test" => {
                check.test = match &value.value {
                    // A string is a command for the container's shell.
                    Value::Scalar { text, .. } => vec!["CMD-SHELL".to_string(), text.clone()],
                    _ => reader.strings(value, &key_path).unwrap_or_default(),
                };
                if let Some(first) = check.test.first() {
                    if !matches!(first.as_str(), "CMD" | "CMD-SHELL" | "NONE") {
                        reader.error(
                            &value.at,
                            &key_path,
                            format!(
                                "a list test starts with CMD, CMD-SHELL or NONE, not '{first}'"
                            ),
                        );
                    }
                }
            }
            "interval" => check.interval_ms = reader.duration_ms(value, &key_path).unwrap_or(0),
            "timeout" => check.timeout_ms = reader.duration_ms(value, &key_path).unwrap_or(0),
            "start_period" => {
                check.start_period_ms = reader.duration_ms(value, &key_path).unwrap_or(0);
            }
            "retries" => check.retries = reader.count(value, &key_path).unwrap_or(0),
            "disable" => disabled = reader.boolean(value, &key_path).unwrap_or(false),
            _ => {}
        }
    }
    if disabled {
        check = HealthCheck {
            test: vec!["NONE".to_string()],
            ..HealthCheck::default()
        };
    }
    Some(check)
}
