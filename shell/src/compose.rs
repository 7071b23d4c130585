//! Compose files as `stack deploy` reads them: YAML with a place for every node, variables
//! substituted, several files merged, then each service, network, secret and config as the
//! spec essaim creates. The whole file is checked before anything is deployed: [`load`] gives either a
//! [`Stack`] or every error found, each at its `file:line:column` and key path.
//!
//! # Layout
//! - [`yaml`]: the file's tree, each node with its position; anchors and merge keys resolved.
//! - [`interpolation`]: `${VAR}`, `${VAR:-default}`, `${VAR:?message}`... in one value.
//! - [`env_file`]: the `.env` file beside the first compose file, and `env_file:` files.
//! - [`merge`]: several `-c` files as one, as Docker merges them.
//! - [`read`]: what each key takes (numbers, durations, lists...), and the errors and
//!   warnings, with their places.
//! - [`service`]: one compose service as a service spec.

pub mod env_file;
pub mod interpolation;
pub mod merge;
pub mod read;
pub mod service;
pub mod yaml;

use std::collections::BTreeMap;

use essaim_core::model::{FileKind, FileSpec, NetworkDriver, NetworkSpec, ServiceSpec};

use read::{join, Problem, Reader, Support};
use yaml::{Node, Value};

/// The label that says which stack a service or network belongs to, Docker's own.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// The stop grace period when a file gives none, as Docker's.
pub const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

/// One `-c` file's text and the name its positions carry.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// What the files ask for: every service, network, secret and config of the stack, in the
/// files' order.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub name: String,
    pub services: Vec<ServiceSpec>,
    pub networks: Vec<StackNetwork>,
    /// The top-level `secrets:` and `configs:`, each with its data already read.
    pub files: Vec<StackFile>,
    pub warnings: Vec<Problem>,
}

/// A secret or config of the file, by its key under `secrets:` or `configs:`: one the stack
/// makes (`STACK_KEY`, or its `name:`), or an existing one it uses (`external`).
#[derive(Clone, PartialEq, Eq)]
pub struct StackFile {
    pub kind: FileKind,
    /// The key under `secrets:` / `configs:`: the file's name in the task by default.
    pub key: String,
    /// `external: true`: it exists already; the stack neither makes nor removes it.
    pub external: bool,
    /// The name in the cluster, and the labels the stack makes it with.
    pub spec: FileSpec,
    /// What it holds, read when the files are loaded, so that a file that cannot be read
    /// stops the deploy before any change; empty for an external one.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for StackFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A secret's data must never reach a log or a test's failure message.
        f.debug_struct("StackFile")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("external", &self.external)
            .field("spec", &self.spec)
            .field("size", &self.data.len())
            .finish()
    }
}

/// A network of the file: one the stack creates (`NAME_KEY`), or an existing one it uses.
#[derive(Debug, Clone, PartialEq)]
pub struct StackNetwork {
    /// The key under `networks:` (`default` for the stack's default network).
    pub key: String,
    /// `external: true`: the network exists already and the stack neither makes nor removes it.
    pub external: bool,
    pub spec: NetworkSpec,
}

/// The files could not become a stack; nothing may be deployed.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.errors.len();
        let lines: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{}\n{} error{} in the compose file{}: nothing was deployed",
            lines.join("\n"),
            count,
            if count == 1 { "" } else { "s" },
            if count == 1 { "" } else { "s" },
        )
    }
}

impl std::error::Error for Refused {}

/// What loading needs from outside: variables and files.
pub struct Inputs<'a> {
    /// A variable: the process's environment first, then the `.env` file.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// An `env_file:`, as the file names it.
    pub read_env_file: &'a dyn Fn(&str) -> Result<String, String>,
    /// Where relative bind sources (`./site:/www`) and secret files are from: the first
    /// file's directory, as Compose has it.
    pub base_dir: &'a std::path::Path,
    /// The data of a secret's or config's `file:`, by its full path, checked as `secret
    /// create` checks it (not empty, not too large).
    pub read_data: &'a ReadData<'a>,
}

/// How [`Inputs`] reads a secret's or config's file: its data, or why not, in words.
pub type ReadData<'a> = dyn Fn(FileKind, &std::path::Path) -> Result<Vec<u8>, String> + 'a;

/// `path` as given in a compose file: relative ones are from `base` (the first file's
/// directory), a leading `./` left out.
pub fn in_base_dir(base: &std::path::Path, path: &std::path::Path) -> std::path::PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path.strip_prefix(".").unwrap_or(path))
    }
}

/// A named volume of the file, by its key under `volumes:`: the volume nodes make
/// (`STACK_KEY`, or its `name:`), or an existing one (`external`), with its labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackVolume {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Checks a stack name as Docker does: it prefixes every service and network name.
///
/// # Errors
/// Empty, or with characters a service name cannot hold.
pub fn check_stack_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid_start && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(())
    } else {
        Err(format!(
            "invalid stack name '{name}': use letters, digits, '_', '.' and '-', starting with a \
             letter or digit"
        ))
    }
}

/// Reads `sources` (merged in order) as the stack `name`.
///
/// # Errors
/// Every error of the files, with the warnings found meanwhile.
pub fn load(sources: &[Source], name: &str, inputs: &Inputs<'_>) -> Result<Stack, Refused> {
    let mut reader = Reader::default();
    let mut merged: Option<Node> = None;
    for source in sources {
        let tree = match yaml::parse(&source.name, &source.text) {
            Ok(tree) => tree,
            Err(error) => {
                reader.error(&error.at, "", error.message);
                continue;
            }
        };
        let tree = interpolate(tree, &mut reader, inputs.lookup);
        if !matches!(tree.value, Value::Mapping(_) | Value::Null) {
            reader.error(
                &tree.at,
                "",
                format!("a compose file is a mapping of keys, not {}", tree.kind()),
            );
            continue;
        }
        merged = Some(match merged {
            Some(base) => merge::merge(base, tree),
            None => tree,
        });
    }
    let stack = merged.and_then(|tree| stack(&mut reader, &tree, name, inputs));
    // In the order of the files and of their lines, as a reader goes through them.
    let place = |problem: &Problem| {
        let file = sources
            .iter()
            .position(|source| *source.name == *problem.at.file);
        (file, problem.at.line, problem.at.column)
    };
    reader.errors.sort_by_key(place);
    reader.warnings.sort_by_key(place);
    match stack {
        Some(mut stack) if reader.errors.is_empty() => {
            stack.warnings = reader.warnings;
            Ok(stack)
        }
        _ => Err(Refused {
            errors: reader.errors,
            warnings: reader.warnings,
        }),
    }
}

fn top_level_key(key: &str) -> Option<Support> {
    Some(match key {
        "version" | "services" | "networks" | "volumes" | "secrets" | "configs" => Support::Read,
        "name" => Support::Ignored("ignored: the stack's name is the one given to stack deploy"),
        "include" | "models" => Support::NotYet("not supported yet"),
        _ => return None,
    })
}

fn stack(reader: &mut Reader, tree: &Node, name: &str, inputs: &Inputs<'_>) -> Option<Stack> {
    let mut services = None;
    let mut networks_node = None;
    let mut volumes = BTreeMap::new();
    let mut files = Vec::new();
    for entry in reader.mapping(tree, "", &top_level_key) {
        match entry.key.as_str() {
            "version" => version(reader, &entry.value),
            "services" => services = Some(&entry.value),
            "networks" => networks_node = Some(&entry.value),
            "volumes" => volumes = stack_volumes(reader, &entry.value, name),
            "secrets" => files.extend(stack_files(
                reader,
                &entry.value,
                FileKind::Secret,
                name,
                inputs,
            )),
            "configs" => files.extend(stack_files(
                reader,
                &entry.value,
                FileKind::Config,
                name,
                inputs,
            )),
            _ => {}
        }
    }
    let Some(services) = services else {
        reader.error(&tree.at, "services", "the file has no services");
        return None;
    };
    let mut networks = match networks_node {
        Some(node) => stack_networks(reader, node, name),
        None => Vec::new(),
    };
    let service_entries = reader.mapping(services, "services", &|_| Some(Support::Read));
    if service_entries.is_empty() {
        reader.error(&services.at, "services", "the file has no services");
    }
    // The default network exists for the services that name none, as Docker makes it.
    let names_none = service_entries
        .iter()
        .any(|entry| entry.value.get("networks").is_none());
    if names_none && !networks.iter().any(|network| network.key == "default") {
        networks.push(StackNetwork {
            key: "default".to_string(),
            external: false,
            spec: network_spec(format!("{name}_default"), name),
        });
    }
    let network_names: BTreeMap<String, String> = networks
        .iter()
        .map(|network| (network.key.clone(), network.spec.name.clone()))
        .collect();
    let declared = |kind: FileKind| -> BTreeMap<String, String> {
        files
            .iter()
            .filter(|file| file.kind == kind)
            .map(|file| (file.key.clone(), file.spec.name.clone()))
            .collect()
    };
    let (secrets, configs) = (declared(FileKind::Secret), declared(FileKind::Config));
    let context = service::Context {
        stack: name,
        networks: &network_names,
        volumes: &volumes,
        secrets: &secrets,
        configs: &configs,
        base_dir: inputs.base_dir,
        lookup: inputs.lookup,
        read_env_file: inputs.read_env_file,
    };
    let mut specs = Vec::new();
    for entry in service_entries {
        if let Err(message) = check_stack_name(&entry.key) {
            let message = message.replace("stack name", "service name");
            reader.error(&entry.key_at, &join("services", &entry.key), message);
            continue;
        }
        specs.extend(service::convert(
            reader,
            &entry.key,
            &entry.key_at,
            &entry.value,
            &context,
        ));
    }
    // A network no service joins is not made (Docker's way).
    networks.retain(|network| {
        specs.iter().any(|spec| {
            spec.task
                .networks
                .iter()
                .any(|attachment| attachment.target == network.spec.name)
        })
    });
    Some(Stack {
        name: name.to_string(),
        services: specs,
        networks,
        files,
        warnings: Vec::new(),
    })
}

/// Compose files 3.x and the versionless Compose Specification; version 1 and 2 files were
/// never for stacks.
fn version(reader: &mut Reader, node: &Node) {
    if let Some(version) = reader.string(node, "version") {
        if !(version == "3" || version.starts_with("3.")) {
            reader.error(
                &node.at,
                "version",
                format!(
                    "version '{version}' is not a stack file: use version 3.x, or leave \
                     'version' out (the Compose Specification)"
                ),
            );
        }
    }
}

fn network_spec(name: String, stack: &str) -> NetworkSpec {
    NetworkSpec {
        name,
        driver: NetworkDriver::Overlay,
        labels: BTreeMap::from([(NAMESPACE_LABEL.to_string(), stack.to_string())]),
        subnet: None,
        gateway: None,
        attachable: false,
        ingress: false,
    }
}

/// A network's or volume's `driver:`, which may only be `wanted`; `refusal` says why another
/// is not.
fn only_driver(
    reader: &mut Reader,
    node: &Node,
    path: &str,
    wanted: &str,
    refusal: impl Fn(&str) -> String,
) {
    if let Some(driver) = reader.string(node, path) {
        if driver != wanted {
            reader.error(&node.at, path, refusal(&driver));
        }
    }
}

/// What the keys every top-level object (network, volume, secret, config) takes say:
/// `external`, `name`, `labels`.
#[derive(Default)]
struct Naming {
    external: bool,
    /// `name:`, or the one `external: {name: N}` gives.
    name: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Naming {
    /// Reads `option` when it is one of those keys; false when it is another.
    fn read(&mut self, reader: &mut Reader, option: &yaml::Entry, key_path: &str) -> bool {
        let value = &option.value;
        match option.key.as_str() {
            "external" => {
                let name;
                (self.external, name) = read_external(reader, value, key_path);
                self.name = name.or(self.name.take());
            }
            "name" => self.name = reader.string(value, key_path),
            "labels" => self.labels.extend(reader.labels(value, key_path)),
            _ => return false,
        }
        true
    }
}

/// `external: true`, or Compose 3.3's `external: {name: N}`: whether the object is an
/// existing one, and the name it gives it there.
fn read_external(reader: &mut Reader, node: &Node, path: &str) -> (bool, Option<String>) {
    match &node.value {
        Value::Mapping(_) => {
            let name = node
                .get("name")
                .and_then(|name| reader.string(&name.value, &join(path, "name")));
            (true, name)
        }
        _ => (reader.boolean(node, path).unwrap_or(false), None),
    }
}

/// The top-level `volumes:`: `driver` (`local` only), `external`, `name`, `labels`.
fn stack_volumes(reader: &mut Reader, node: &Node, stack: &str) -> BTreeMap<String, StackVolume> {
    let support = |key: &str| match key {
        "driver" | "external" | "name" | "labels" => Some(Support::Read),
        "driver_opts" => Some(Support::NotYet(
            "not supported yet: nodes would make the volume without them",
        )),
        _ => None,
    };
    let mut volumes = BTreeMap::new();
    for entry in reader.mapping(node, "volumes", &|_| Some(Support::Read)) {
        let path = join("volumes", &entry.key);
        let mut volume = StackVolume {
            name: format!("{stack}_{}", entry.key),
            labels: BTreeMap::from([(NAMESPACE_LABEL.to_string(), stack.to_string())]),
        };
        let mut naming = Naming::default();
        for option in reader.mapping(&entry.value, &path, &support) {
            let key_path = join(&path, &option.key);
            if !naming.read(reader, option, &key_path) {
                // The one other key.
                only_driver(reader, &option.value, &key_path, "local", |driver| {
                    format!("not supported yet: the driver '{driver}' (nodes make local volumes)")
                });
            }
        }
        volume.labels.extend(naming.labels);
        if naming.external {
            // Docker's: an external volume is used as it is, by its own name.
            volume.name = naming.name.unwrap_or_else(|| entry.key.clone());
            volume.labels.clear();
        } else if let Some(name) = naming.name {
            volume.name = name;
        }
        if let Err(message) = essaim_core::model::check_volume_name(&volume.name) {
            reader.error(&entry.key_at, &path, message);
        }
        volumes.insert(entry.key.clone(), volume);
    }
    volumes
}

/// The key a file's secrets or configs are under.
pub fn section(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Secret => "secrets",
        FileKind::Config => "configs",
    }
}

/// The top-level `secrets:` or `configs:`: each entry's data from `file` (from the first
/// file's directory), `environment` (a variable's value) or, for a config, `content`; or
/// `external` (with its `name`), an existing one; `name`, `labels`. All data is read here,
/// so that nothing is deployed when one cannot be.
fn stack_files(
    reader: &mut Reader,
    node: &Node,
    kind: FileKind,
    stack: &str,
    inputs: &Inputs<'_>,
) -> Vec<StackFile> {
    let section = section(kind);
    let support = |key: &str| match key {
        "file" | "environment" | "external" | "name" | "labels" => Some(Support::Read),
        "content" if kind == FileKind::Config => Some(Support::Read),
        "content" => Some(Support::NotYet(
            "a secret's data comes from 'file' or 'environment': 'content' is for configs, \
             as in the Compose Specification",
        )),
        "driver" | "driver_opts" | "template_driver" => Some(Support::NotYet(
            "not supported yet: the data is the one given, as it is",
        )),
        _ => None,
    };
    let mut files = Vec::new();
    for entry in reader.mapping(node, section, &|_| Some(Support::Read)) {
        let path = join(section, &entry.key);
        let mut file = StackFile {
            kind,
            key: entry.key.clone(),
            external: false,
            spec: FileSpec {
                name: format!("{stack}_{}", entry.key),
                labels: BTreeMap::from([(NAMESPACE_LABEL.to_string(), stack.to_string())]),
            },
            data: Vec::new(),
        };
        let mut naming = Naming::default();
        // The keys that give the data: one, unless external.
        let mut sources = Vec::new();
        let errors_before = reader.errors.len();
        for option in reader.mapping(&entry.value, &path, &support) {
            let key_path = join(&path, &option.key);
            if !naming.read(reader, option, &key_path) {
                sources.push((option, key_path));
            }
        }
        file.external = naming.external;
        file.spec.labels.extend(naming.labels);
        let what = match kind {
            FileKind::Secret => "'file: PATH' or 'environment: VARIABLE'",
            FileKind::Config => "'file: PATH', 'environment: VARIABLE' or 'content: TEXT'",
        };
        match (file.external, sources.as_slice()) {
            (true, [(first, key_path), ..]) => reader.error(
                &first.key_at,
                key_path,
                format!(
                    "an external {kind} exists already, with its data: '{}' has no place \
                     beside 'external: true'",
                    first.key
                ),
            ),
            (true, []) => {}
            (false, []) if reader.errors.len() == errors_before => reader.error(
                &entry.key_at,
                &path,
                format!("no data: give {what}, or 'external: true' for an existing {kind}"),
            ),
            (false, []) => {}
            (false, [(source, key_path)]) => {
                if let Some(data) = file_data(reader, source, key_path, kind, inputs) {
                    file.data = data;
                }
            }
            (false, [_, (second, key_path), ..]) => reader.error(
                &second.key_at,
                key_path,
                format!("the {kind}'s data is given twice: give one of {what}"),
            ),
        }
        if file.external {
            // Used as it is, by its own name, as Docker does.
            file.spec.name = naming.name.unwrap_or_else(|| entry.key.clone());
            file.spec.labels.clear();
        } else if let Some(name) = naming.name {
            file.spec.name = name;
        }
        if let Err(message) = essaim_core::model::check_file_name(&file.spec.name) {
            reader.error(&entry.key_at, &path, message);
        }
        files.push(file);
    }
    files
}

/// The data an entry of `secrets:` or `configs:` gives with `source` (`file`, `environment`
/// or `content`), or None with the error in `reader`.
fn file_data(
    reader: &mut Reader,
    source: &yaml::Entry,
    path: &str,
    kind: FileKind,
    inputs: &Inputs<'_>,
) -> Option<Vec<u8>> {
    let text = reader.string(&source.value, path)?;
    let checked = |what: &str, data: String| {
        crate::commands::file::check_data(kind, what, data.as_bytes()).map(|()| data.into_bytes())
    };
    let data = match source.key.as_str() {
        "file" => (inputs.read_data)(
            kind,
            &in_base_dir(inputs.base_dir, std::path::Path::new(&text)),
        ),
        "environment" => match (inputs.lookup)(&text) {
            Some(value) => checked(&format!("the variable {text}"), value),
            None => Err(format!("the variable {text} is not set")),
        },
        _ => checked("the content", text),
    };
    data.map_err(|message| reader.error(&source.value.at, path, message))
        .ok()
}

fn stack_networks(reader: &mut Reader, node: &Node, stack: &str) -> Vec<StackNetwork> {
    let mut networks = Vec::new();
    for entry in reader.mapping(node, "networks", &|_| Some(Support::Read)) {
        let path = join("networks", &entry.key);
        let mut network = StackNetwork {
            key: entry.key.clone(),
            external: false,
            spec: network_spec(format!("{stack}_{}", entry.key), stack),
        };
        let mut naming = Naming::default();
        let support = |key: &str| match key {
            "driver" | "external" | "name" | "labels" | "attachable" | "ipam" => {
                Some(Support::Read)
            }
            "driver_opts" | "internal" | "enable_ipv6" => Some(Support::NotYet(
                "not supported yet: essaim would make the network without it",
            )),
            _ => None,
        };
        for option in reader.mapping(&entry.value, &path, &support) {
            let key_path = join(&path, &option.key);
            if naming.read(reader, option, &key_path) {
                continue;
            }
            let value = &option.value;
            match option.key.as_str() {
                "driver" => only_driver(reader, value, &key_path, "overlay", |driver| {
                    format!(
                        "the driver '{driver}' is not for stacks: their networks span the \
                         cluster (overlay)"
                    )
                }),
                "attachable" => {
                    network.spec.attachable = reader.boolean(value, &key_path).unwrap_or(false);
                }
                "ipam" => ipam(reader, value, &key_path, &mut network.spec),
                _ => {}
            }
        }
        network.external = naming.external;
        network.spec.labels.extend(naming.labels);
        if let Some(name) = naming.name {
            network.spec.name = name;
        } else if network.external {
            // An external network is named by its key.
            network.spec.name.clone_from(&entry.key);
        }
        networks.push(network);
    }
    networks
}

fn ipam(reader: &mut Reader, node: &Node, path: &str, spec: &mut NetworkSpec) {
    let support = |key: &str| match key {
        "config" => Some(Support::Read),
        "driver" | "options" => Some(Support::NotYet(
            "not supported yet: one IPAM, the cluster's",
        )),
        _ => None,
    };
    for entry in reader.mapping(node, path, &support) {
        let key_path = join(path, "config");
        let Value::Sequence(configs) = &entry.value.value else {
            reader.error(
                &entry.value.at,
                &key_path,
                "expected a list of {subnet: CIDR}",
            );
            continue;
        };
        if configs.len() > 1 {
            reader.error(
                &configs[1].at,
                &key_path,
                "not supported yet: one subnet per network",
            );
        }
        let Some(config) = configs.first() else {
            continue;
        };
        let support = |key: &str| match key {
            "subnet" | "gateway" => Some(Support::Read),
            "ip_range" | "aux_addresses" => Some(Support::NotYet("not supported yet")),
            _ => None,
        };
        let config_path = format!("{key_path}[0]");
        for option in reader.mapping(config, &config_path, &support) {
            let option_path = join(&config_path, &option.key);
            if option.key == "subnet" {
                spec.subnet = reader.parsed(&option.value, &option_path, |text| {
                    text.parse::<essaim_core::model::Ipv4Subnet>()
                        .map_err(|error| error.to_string())
                });
            } else {
                spec.gateway = reader.parsed(&option.value, &option_path, |text| {
                    text.parse()
                        .map_err(|_| format!("'{text}' is not an IPv4 address"))
                });
            }
        }
    }
}

/// Substitutes the variables of every value of `node` (keys are left as written, as Compose
/// leaves them); an unset variable is a warning, a `${VAR:?message}` an error at its place.
fn interpolate(node: Node, reader: &mut Reader, lookup: &dyn Fn(&str) -> Option<String>) -> Node {
    let value = match node.value {
        Value::Scalar { text, quoted } => match interpolation::interpolate(&text, lookup) {
            Ok(done) => {
                for variable in done.unset {
                    reader.warn(
                        &node.at,
                        "",
                        format!("the {variable} variable is not set: a blank string is used"),
                    );
                }
                Value::Scalar {
                    text: done.value,
                    quoted,
                }
            }
            Err(error) => {
                // The error's column is within the value; a quote comes before it.
                let mut at = node.at.clone();
                at.column += error.column - 1 + usize::from(quoted);
                reader.error(&at, "", error.message);
                Value::Scalar { text, quoted }
            }
        },
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .map(|item| interpolate(item, reader, lookup))
                .collect(),
        ),
        Value::Mapping(entries) => Value::Mapping(
            entries
                .into_iter()
                .map(|entry| yaml::Entry {
                    value: interpolate(entry.value, reader, lookup),
                    ..entry
                })
                .collect(),
        ),
        Value::Null => Value::Null,
    };
    Node { at: node.at, value }
}

#[cfg(test)]
mod tests;
