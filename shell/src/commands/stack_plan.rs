//! What a `stack deploy` will do, worked out before it does anything: the networks, secrets
//! and configs to make, each service to create, update (with its changes, field by field) or
//! leave as it is, and the stack's services, secrets and configs no longer in the files
//! (removed with `--prune`, else left alone).
//! Pure logic over what the cluster has and what the files ask; `stack deploy --dry-run`
//! prints it, and the deploy carries it out.

use serde::Serialize;
use serde_json::Value as Json;

use essaim_api::control::{FileView, NetworkView, ServiceView};
use essaim_core::allocator::ports::join_ingress;
use essaim_core::model::{FileKind, NetworkSpec, PublishMode, ServiceSpec};

use crate::compose::{Stack, StackFile, NAMESPACE_LABEL};

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub stack: String,
    /// The stack's networks that do not exist yet.
    pub networks: Vec<NetworkStep>,
    /// The stack's secrets that do not exist yet, made before the services that use them,
    /// and those no longer in the files.
    pub secrets: Vec<FileStep>,
    /// The same for configs.
    pub configs: Vec<FileStep>,
    pub services: Vec<ServiceStep>,
}

/// A secret or config of the stack to make, or one no longer in the files. One that exists
/// is used as it is: its data never changes (see [`plan`]).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FileStep {
    Create {
        name: String,
        #[serde(skip)]
        file: Box<StackFile>,
    },
    /// The stack's, not in the files, and `--prune` given: removed after the services.
    Remove { name: String },
    /// The stack's, not in the files: without `--prune`, or used by a service of no stack
    /// or of another one (`why`).
    LeaveAlone { name: String, why: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkStep {
    pub action: &'static str,
    pub name: String,
    #[serde(skip)]
    pub spec: NetworkSpec,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ServiceStep {
    Create {
        name: String,
        image: String,
        replicas: Option<u64>,
        #[serde(skip)]
        spec: Box<ServiceSpec>,
    },
    Update {
        name: String,
        changes: Vec<Change>,
        #[serde(skip)]
        current: Box<ServiceView>,
        #[serde(skip)]
        spec: Box<ServiceSpec>,
    },
    Unchanged {
        name: String,
    },
    /// In the stack, not in the files, and `--prune` given.
    Remove {
        name: String,
    },
    /// In the stack, not in the files, without `--prune`.
    LeaveAlone {
        name: String,
    },
}

/// One field that an update changes: `image: nginx:1.25 -> nginx:1.27`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub field: String,
    pub from: String,
    pub to: String,
}

/// Why the plan cannot be carried out, found before any change.
#[derive(Debug)]
pub struct Unplannable(pub String);

impl std::fmt::Display for Unplannable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unplannable {}

/// The plan that takes the cluster's `services`, `networks` and `files` (its secrets and
/// configs) to `stack`.
///
/// # Errors
/// An external network, secret or config that does not exist; a service of the stack's name
/// that belongs to no stack or to another one (it would be taken over); a config of the
/// stack's that exists with other data (a config's data never changes: the entry is renamed
/// to roll out new data, as in Swarm).
///
/// # Caveats
/// No answer carries a secret's data, so a secret of the stack that exists is taken as it
/// is, whatever its file now holds: new data needs a new name, as for a config. Docker's
/// leader refuses the change instead; here the deploy goes on with the secret it has.
pub fn plan(
    stack: &Stack,
    services: &[ServiceView],
    networks: &[NetworkView],
    files: &[FileView],
    prune: bool,
) -> Result<Plan, Unplannable> {
    let mut network_steps = Vec::new();
    for network in &stack.networks {
        let exists = networks
            .iter()
            .any(|view| view.network.spec.name == network.spec.name);
        if network.external && !exists {
            return Err(Unplannable(format!(
                "the network '{}' is declared external, but the cluster has no such network: \
                 create it with 'essaim network create {}'",
                network.spec.name, network.spec.name
            )));
        }
        if !network.external && !exists {
            network_steps.push(NetworkStep {
                action: "create",
                name: network.spec.name.clone(),
                spec: network.spec.clone(),
            });
        }
    }
    let secrets = file_steps(stack, FileKind::Secret, files, services, prune)?;
    let configs = file_steps(stack, FileKind::Config, files, services, prune)?;
    let mut steps = Vec::new();
    for spec in &stack.services {
        let current = services
            .iter()
            .find(|view| view.service.spec.name == spec.name);
        let Some(current) = current else {
            steps.push(ServiceStep::Create {
                name: spec.name.clone(),
                image: spec.task.image.clone(),
                replicas: spec.mode.slots(),
                spec: Box::new(spec.clone()),
            });
            continue;
        };
        let owner = current.service.spec.labels.get(NAMESPACE_LABEL);
        if owner.map(String::as_str) != Some(stack.name.as_str()) {
            return Err(Unplannable(format!(
                "a service named {} exists already and is not part of the stack {} ({}): \
                 remove it or rename the stack",
                spec.name,
                stack.name,
                owner.map_or("it belongs to no stack".to_string(), |other| format!(
                    "it belongs to the stack {other}"
                ))
            )));
        }
        let wanted = as_stored(spec, &current.service.spec);
        let changes = changes(&current.service.spec, &wanted);
        if changes.is_empty() {
            steps.push(ServiceStep::Unchanged {
                name: spec.name.clone(),
            });
        } else {
            steps.push(ServiceStep::Update {
                name: spec.name.clone(),
                changes,
                current: Box::new(current.clone()),
                spec: Box::new(wanted),
            });
        }
    }
    let mut gone: Vec<&ServiceView> = services
        .iter()
        .filter(|view| view.service.spec.labels.get(NAMESPACE_LABEL) == Some(&stack.name))
        .filter(|view| {
            !stack
                .services
                .iter()
                .any(|spec| spec.name == view.service.spec.name)
        })
        .collect();
    gone.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
    for view in gone {
        let name = view.service.spec.name.clone();
        steps.push(if prune {
            ServiceStep::Remove { name }
        } else {
            ServiceStep::LeaveAlone { name }
        });
    }
    Ok(Plan {
        stack: stack.name.clone(),
        networks: network_steps,
        secrets,
        configs,
        services: steps,
    })
}

/// The steps for the stack's secrets or configs (`kind`), against the cluster's `files`.
fn file_steps(
    stack: &Stack,
    kind: FileKind,
    files: &[FileView],
    services: &[ServiceView],
    prune: bool,
) -> Result<Vec<FileStep>, Unplannable> {
    let files: Vec<&FileView> = files.iter().filter(|view| view.kind == kind).collect();
    let mut steps = Vec::new();
    for file in stack.files.iter().filter(|file| file.kind == kind) {
        let name = &file.spec.name;
        let Some(current) = files.iter().find(|view| view.spec.name == *name) else {
            if file.external {
                return Err(Unplannable(format!(
                    "the {kind} '{name}' is declared external, but the cluster has no such \
                     {kind}: create it with 'essaim {kind} create {name} FILE'"
                )));
            }
            steps.push(FileStep::Create {
                name: name.clone(),
                file: Box::new(file.clone()),
            });
            continue;
        };
        // A secret's data is never shown: it cannot be compared (see `plan`).
        let changed = current.data.as_ref().is_some_and(|data| *data != file.data);
        if !file.external && changed {
            return Err(Unplannable(format!(
                "the {kind} {name} exists with other data than the files give ({}.{}), and \
                 a {kind}'s data never changes: rename the entry (say {}_v2, keeping its \
                 target in the services that use it) so that the deploy makes a new {kind} \
                 and rolls the services over to it",
                crate::compose::section(kind),
                file.key,
                file.key
            )));
        }
    }
    let in_files = |name: &str| {
        stack
            .files
            .iter()
            .any(|file| file.kind == kind && file.spec.name == name)
    };
    let mut gone: Vec<&&FileView> = files
        .iter()
        .filter(|view| view.spec.labels.get(NAMESPACE_LABEL) == Some(&stack.name))
        .filter(|view| !in_files(&view.spec.name))
        .collect();
    gone.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    for view in gone {
        let name = view.spec.name.clone();
        // Services outside the stack keep using it after the deploy; the leader would
        // refuse its removal once the stack's services are changed.
        let outside: Vec<&str> = view
            .services
            .iter()
            .filter(|user| {
                !services.iter().any(|service| {
                    service.service.spec.name == **user
                        && service.service.spec.labels.get(NAMESPACE_LABEL) == Some(&stack.name)
                })
            })
            .map(String::as_str)
            .collect();
        steps.push(if !prune {
            FileStep::LeaveAlone {
                name,
                why: "--prune removes it".to_string(),
            }
        } else if !outside.is_empty() {
            FileStep::LeaveAlone {
                name,
                why: format!("in use by {}, outside the stack", outside.join(", ")),
            }
        } else {
            FileStep::Remove { name }
        });
    }
    Ok(steps)
}

/// `spec` as the leader would store it for a service that has `current`: on the ingress
/// network when it publishes an ingress port, each ingress port left at 0 given the number
/// it already has, and a forced redeploy's counter kept. Equal to `current` when the files
/// ask for nothing new.
fn as_stored(spec: &ServiceSpec, current: &ServiceSpec) -> ServiceSpec {
    let mut wanted = spec.clone();
    for port in wanted
        .ports
        .iter_mut()
        .filter(|port| port.mode == PublishMode::Ingress && port.published == 0)
    {
        if let Some(had) = current.ports.iter().find(|had| {
            had.mode == PublishMode::Ingress
                && had.target == port.target
                && had.protocol == port.protocol
        }) {
            port.published = had.published;
        }
    }
    join_ingress(&mut wanted);
    wanted.task.force_update = current.task.force_update;
    wanted
}

/// The fields that differ between `from` and `to`, with readable names (`image`,
/// `replicas`, `env.LOG`), each value as compact JSON when it is not a plain string.
pub fn changes(from: &ServiceSpec, to: &ServiceSpec) -> Vec<Change> {
    let (Ok(from), Ok(to)) = (serde_json::to_value(from), serde_json::to_value(to)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    diff("", &from, &to, &mut found);
    // What a reader looks for first: the image, then the count; the rest by name.
    found.sort_by_key(|change| match change.field.as_str() {
        "image" => 0,
        "replicas" | "mode" => 1,
        _ => 2,
    });
    found
}

fn diff(path: &str, from: &Json, to: &Json, found: &mut Vec<Change>) {
    if from == to {
        return;
    }
    if let (Json::Object(from_fields), Json::Object(to_fields)) = (from, to) {
        // The env and labels are compared key by key; other objects field by field.
        let mut keys: Vec<&String> = from_fields.keys().chain(to_fields.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let none = Json::Null;
            diff(
                &child,
                from_fields.get(key).unwrap_or(&none),
                to_fields.get(key).unwrap_or(&none),
                found,
            );
        }
        return;
    }
    found.push(Change {
        field: readable(path),
        from: shown(from),
        to: shown(to),
    });
}

/// A spec path as a user names it: `task.image` is `image`, the replicated mode's count is
/// `replicas`.
fn readable(path: &str) -> String {
    let path = path.strip_prefix("task.").unwrap_or(path);
    // The container options by their compose keys: `container.workdir` is `working_dir`.
    if let Some(option) = path.strip_prefix("container.") {
        let (key, rest) = option.split_once('.').unwrap_or((option, ""));
        let key = match key {
            "workdir" => "working_dir",
            "dns_options" => "dns_opt",
            "hosts" => "extra_hosts",
            other => other,
        };
        return if rest.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{rest}")
        };
    }
    match path {
        "mode.replicated.replicas" => "replicas".to_string(),
        "args" => "command".to_string(),
        "mounts" => "volumes".to_string(),
        other => other.to_string(),
    }
}

fn shown(value: &Json) -> String {
    match value {
        Json::Null => "(none)".to_string(),
        Json::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Plan {
    /// The secrets' steps, then the configs', each with its kind.
    pub fn file_steps(&self) -> impl Iterator<Item = (FileKind, &FileStep)> {
        let secrets = self.secrets.iter().map(|step| (FileKind::Secret, step));
        secrets.chain(self.configs.iter().map(|step| (FileKind::Config, step)))
    }

    /// The plan as `stack deploy` prints it, one line a step:
    /// `+ service shop_cache (redis:7, 1 replica)`, `~ service shop_web: image a -> b`.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for network in &self.networks {
            lines.push(format!("+ network {}", network.name));
        }
        for (kind, step) in self.file_steps() {
            if let FileStep::Create { name, .. } = step {
                lines.push(format!("+ {kind} {name}"));
            }
        }
        for step in &self.services {
            lines.push(match step {
                ServiceStep::Create {
                    name,
                    image,
                    replicas,
                    ..
                } => match replicas {
                    Some(1) => format!("+ service {name} ({image}, 1 replica)"),
                    Some(n) => format!("+ service {name} ({image}, {n} replicas)"),
                    None => format!("+ service {name} ({image}, global)"),
                },
                ServiceStep::Update { name, changes, .. } => {
                    let changes: Vec<String> = changes
                        .iter()
                        .map(|change| format!("{} {} -> {}", change.field, change.from, change.to))
                        .collect();
                    format!("~ service {name}: {}", changes.join(", "))
                }
                ServiceStep::Unchanged { name } => format!("= service {name}: unchanged"),
                ServiceStep::Remove { name } => format!("- service {name}"),
                ServiceStep::LeaveAlone { name } => format!(
                    "  service {name}: no longer in the files, left alone (--prune removes it)"
                ),
            });
        }
        for (kind, step) in self.file_steps() {
            match step {
                FileStep::Create { .. } => {}
                FileStep::Remove { name } => lines.push(format!("- {kind} {name}")),
                FileStep::LeaveAlone { name, why } => lines.push(format!(
                    "  {kind} {name}: no longer in the files, left alone ({why})"
                )),
            }
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use essaim_core::model::PortConfig;

    use super::*;
    use crate::commands::service_update::tests::service_view;
    use crate::compose::{self, Inputs, Source};

    fn stack(text: &str) -> Stack {
        let lookup = |_: &str| None;
        let read = |path: &str| Err(format!("{path}: no files in this test"));
        compose::load(
            &[Source {
                name: "docker-compose.yml".into(),
                text: text.into(),
            }],
            "shop",
            &Inputs {
                lookup: &lookup,
                read_env_file: &read,
                base_dir: std::path::Path::new("/project"),
                read_data: &|_, path| Ok(format!("the data of {}", path.display()).into_bytes()),
            },
        )
        .expect("valid file")
    }

    /// What the cluster holds after `stack` was deployed: each spec as the leader stores it,
    /// an ingress port left at 0 given `published`.
    fn deployed(stack: &Stack, published: u16) -> Vec<ServiceView> {
        stack
            .services
            .iter()
            .map(|spec| {
                let mut spec = spec.clone();
                for port in spec.ports.iter_mut().filter(|port| port.published == 0) {
                    port.published = published;
                }
                join_ingress(&mut spec);
                service_view(spec, 3)
            })
            .collect()
    }

    const FILE: &str = "services:\n  web:\n    image: nginx:1.25\n    ports: ['80']\n    deploy:\n      replicas: 3\n  api:\n    image: api:1\n";

    #[test]
    fn a_new_stack_creates_every_service_and_its_network() {
        let plan = plan(&stack(FILE), &[], &[], &[], false).expect("plan");
        assert_eq!(
            plan.lines(),
            vec![
                "+ network shop_default",
                "+ service shop_web (nginx:1.25, 3 replicas)",
                "+ service shop_api (api:1, 1 replica)",
            ]
        );
    }

    #[test]
    fn a_redeploy_of_the_same_file_changes_nothing() {
        let desired = stack(FILE);
        let cluster = deployed(&desired, 30_001);
        let plan = plan(&desired, &cluster, &[], &[], false).expect("plan");
        let unchanged = plan
            .services
            .iter()
            .all(|step| matches!(step, ServiceStep::Unchanged { .. }));
        assert!(unchanged, "{:?}", plan.lines());
    }

    #[test]
    fn a_changed_service_lists_its_changes_field_by_field() {
        let before = stack(FILE);
        let cluster = deployed(&before, 30_001);
        let after = stack(
            &FILE
                .replace("nginx:1.25", "nginx:1.27")
                .replace("replicas: 3", "replicas: 5"),
        );
        let plan = plan(&after, &cluster, &[], &[], false).expect("plan");
        assert_eq!(
            plan.lines(),
            vec![
                "+ network shop_default",
                "~ service shop_web: image nginx:1.25 -> nginx:1.27, replicas 3 -> 5",
                "= service shop_api: unchanged",
            ]
        );
        let ServiceStep::Update { spec, .. } = &plan.services[0] else {
            panic!("an update");
        };
        // The update keeps the port the cluster gave.
        assert!(spec.ports.contains(&PortConfig::tcp(30_001, 80)));
    }

    #[test]
    fn services_no_longer_in_the_files_are_pruned_or_left_alone() {
        let before = stack(FILE);
        let cluster = deployed(&before, 30_001);
        let only_web = stack("services:\n  web:\n    image: nginx:1.25\n    ports: ['80']\n    deploy:\n      replicas: 3\n");
        let kept = plan(&only_web, &cluster, &[], &[], false).expect("plan");
        assert!(kept.lines().contains(
            &"  service shop_api: no longer in the files, left alone (--prune removes it)"
                .to_string()
        ));
        let pruned = plan(&only_web, &cluster, &[], &[], true).expect("plan");
        assert!(pruned.lines().contains(&"- service shop_api".to_string()));
    }

    #[test]
    fn a_service_of_another_stack_or_none_is_not_taken_over() {
        let desired = stack(FILE);
        let mut foreign = deployed(&desired, 30_001).remove(0);
        foreign.service.spec.labels = BTreeMap::new();
        let error = plan(&desired, &[foreign], &[], &[], false).expect_err("refused");
        assert!(error.0.contains("not part of the stack shop"), "{error}");
    }

    #[test]
    fn a_missing_external_network_is_refused_before_anything() {
        let desired = stack("services:\n  a:\n    image: x\n    networks: [edge]\nnetworks:\n  edge:\n    external: true\n");
        let error = plan(&desired, &[], &[], &[], false).expect_err("refused");
        assert!(error.0.contains("'edge' is declared external"), "{error}");
    }

    const WITH_FILES: &str = "services:\n  api:\n    image: api:1\n    secrets: [db_pw, ca]\n    configs: [app]\nsecrets:\n  db_pw:\n    file: db_pw.txt\n  ca:\n    external: true\nconfigs:\n  app:\n    content: port=80\n";

    /// A secret or config of the cluster, as `file_list` gives it (a config with its data).
    fn file_view(kind: FileKind, name: &str, stack: Option<&str>, data: &str) -> FileView {
        FileView {
            id: format!("id-{name}"),
            kind,
            version: 1,
            created_at: Default::default(),
            updated_at: Default::default(),
            spec: essaim_core::model::FileSpec {
                name: name.to_string(),
                labels: stack
                    .map(|stack| BTreeMap::from([(NAMESPACE_LABEL.to_string(), stack.into())]))
                    .unwrap_or_default(),
            },
            size: data.len() as u64,
            data: (kind == FileKind::Config).then(|| data.as_bytes().to_vec()),
            services: Vec::new(),
        }
    }

    #[test]
    fn a_stack_s_secrets_and_configs_are_made_before_its_services_and_reused_after() {
        let desired = stack(WITH_FILES);
        let ca = file_view(FileKind::Secret, "ca", None, "x");
        let first = plan(&desired, &[], &[], std::slice::from_ref(&ca), false).expect("plan");
        assert_eq!(
            first.lines(),
            vec![
                "+ network shop_default",
                "+ secret shop_db_pw",
                "+ config shop_app",
                "+ service shop_api (api:1, 1 replica)",
            ]
        );
        let FileStep::Create { file, .. } = &first.secrets[0] else {
            panic!("a creation");
        };
        assert_eq!(file.data, b"the data of /project/db_pw.txt");
        assert_eq!(file.spec.labels[NAMESPACE_LABEL], "shop");
        let json = serde_json::to_value(&first).expect("json");
        assert_eq!(
            json["configs"],
            serde_json::json!([{"action": "create", "name": "shop_app"}])
        );
        // Deployed once, they are there: a redeploy makes nothing (a secret's data is not
        // compared: no answer carries it).
        let cluster = [
            ca,
            file_view(FileKind::Secret, "shop_db_pw", Some("shop"), "other"),
            file_view(FileKind::Config, "shop_app", Some("shop"), "port=80"),
        ];
        let again = plan(&desired, &[], &[], &cluster, false).expect("plan");
        assert!(
            again.secrets.is_empty() && again.configs.is_empty(),
            "{again:?}"
        );
    }

    #[test]
    fn a_config_with_other_data_or_a_missing_external_secret_is_refused_before_anything() {
        let desired = stack(WITH_FILES);
        let ca = file_view(FileKind::Secret, "ca", None, "x");
        let changed = file_view(FileKind::Config, "shop_app", Some("shop"), "port=81");
        let error = plan(&desired, &[], &[], &[ca, changed], false).expect_err("refused");
        assert!(
            error
                .0
                .contains("the config shop_app exists with other data")
                && error.0.contains("rename the entry (say app_v2"),
            "{error}"
        );
        let error = plan(&desired, &[], &[], &[], false).expect_err("refused");
        assert!(
            error.0.contains("the secret 'ca' is declared external"),
            "{error}"
        );
    }

    #[test]
    fn secrets_no_longer_in_the_files_are_pruned_unless_another_service_uses_them() {
        let desired = stack(FILE);
        let old = file_view(FileKind::Secret, "shop_old", Some("shop"), "x");
        let mut shared = file_view(FileKind::Config, "shop_shared", Some("shop"), "x");
        shared.services = vec!["other_app".into()];
        let foreign = file_view(FileKind::Secret, "mine", None, "x");
        let files = [old, shared, foreign];
        let kept = plan(&desired, &[], &[], &files, false).expect("plan");
        assert!(kept.lines().contains(
            &"  secret shop_old: no longer in the files, left alone (--prune removes it)"
                .to_string()
        ));
        let pruned = plan(&desired, &[], &[], &files, true).expect("plan");
        let lines = pruned.lines();
        assert!(
            lines.contains(&"- secret shop_old".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"  config shop_shared: no longer in the files, left alone (in use by \
                  other_app, outside the stack)"
                    .to_string()
            ),
            "{lines:?}"
        );
        assert!(!lines.iter().any(|line| line.contains("mine")), "{lines:?}");
    }

    #[test]
    fn env_changes_are_named_by_key() {
        let mut from = stack(FILE).services[1].clone();
        from.task.env.insert("A".into(), "1".into());
        let mut to = from.clone();
        to.task.env.insert("A".into(), "2".into());
        to.task.env.insert("B".into(), "3".into());
        assert_eq!(
            changes(&from, &to),
            vec![
                Change {
                    field: "env.A".into(),
                    from: "1".into(),
                    to: "2".into()
                },
                Change {
                    field: "env.B".into(),
                    from: "(none)".into(),
                    to: "3".into()
                },
            ]
        );
    }

    #[test]
    fn container_option_changes_are_named_by_their_compose_keys() {
        let from = stack(FILE).services[1].clone();
        let mut to = from.clone();
        to.task.container.workdir = "/srv".into();
        to.task
            .container
            .labels
            .insert("team".into(), "shop".into());
        let fields: Vec<String> = changes(&from, &to).into_iter().map(|c| c.field).collect();
        assert_eq!(fields, ["labels.team", "working_dir"]);
    }
}
