//! Rhai maps as command-line flags: `web.update(#{image: "app:2", env: #{LOG: "info"}})` and
//! `create_service(#{...})` are read by the same command table as `service update` and
//! `service create`, so they take the same fields, check them the same way, and a mistyped
//! field gets clap's "a similar argument exists".
//!
//! A field `some_name` is the flag `--some-name`. A map value adds and removes entries
//! (`env: #{A: "1", B: ()}` is `--env-add A=1 --env-rm B` on update, `--env A=1` on create);
//! an array repeats the flag; `true` is a bare flag; `args` is the task's command arguments.

use clap::Parser;
use rhai::{Dynamic, Map};

use crate::cli::{
    Cli, Command, NetworkCommand, NetworkCreateArgs, ServiceChanges, ServiceCommand,
    ServiceCreateArgs, UpdateFlags,
};

/// Which command the flags are for: names differ a little (`--env` vs `--env-add`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum For {
    Create,
    Update,
}

/// The flags of `service update` a map of changes stands for.
///
/// # Errors
/// A value of the wrong kind, named with its field.
pub fn from_map(what: &str, changes: &Map) -> Result<Vec<String>, String> {
    flags(what, changes, For::Update)
}

fn flags(what: &str, fields: &Map, purpose: For) -> Result<Vec<String>, String> {
    let mut flags = Vec::new();
    for (key, value) in fields {
        let key = key.as_str();
        let flag = key.replace('_', "-");
        if purpose == For::Create && matches!(key, "image" | "args") {
            continue;
        }
        if key == "args" {
            flags.push("--args".to_string());
            flags.push(quote_all(&words(what, key, value)?));
            continue;
        }
        if let Some(map) = value.read_lock::<Map>() {
            // Maps name the plural-less flag: `labels` and `label` both mean --label-*.
            let base = match flag.as_str() {
                "labels" => "label",
                other => other,
            };
            for (name, entry) in map.iter() {
                match (purpose, entry.is_unit()) {
                    (For::Update, true) => flags.extend([format!("--{base}-rm"), name.to_string()]),
                    (For::Update, false) => {
                        flags.extend([format!("--{base}-add"), format!("{name}={}", text(entry))])
                    }
                    (For::Create, true) => {}
                    (For::Create, false) => {
                        flags.extend([format!("--{base}"), format!("{name}={}", text(entry))])
                    }
                }
            }
            continue;
        }
        if let Some(array) = value.read_lock::<rhai::Array>() {
            for item in array.iter() {
                flags.extend([format!("--{flag}"), text(item)]);
            }
            continue;
        }
        if let Ok(on) = value.as_bool() {
            if on {
                flags.push(format!("--{flag}"));
            }
            continue;
        }
        if value.is_unit() {
            return Err(format!("{what}: field {key} has no value"));
        }
        flags.extend([format!("--{flag}"), text(value)]);
    }
    Ok(flags)
}

/// The `--update-*` flags of an update's settings: `#{parallelism: 1, monitor: "5s",
/// failure_action: "rollback", max_failure_ratio: 0.2, order: "start-first",
/// pause_after: "25%", delay: "10s"}`.
///
/// # Errors
/// An unknown setting (with a suggestion), or a value of the wrong kind.
pub fn update_config(what: &str, config: &Map) -> Result<Vec<String>, String> {
    const SETTINGS: [&str; 7] = [
        "parallelism",
        "delay",
        "monitor",
        "failure_action",
        "max_failure_ratio",
        "order",
        "pause_after",
    ];
    let mut prefixed = Map::new();
    for (key, value) in config {
        if !SETTINGS.contains(&key.as_str()) {
            let hint = essaim_core::suggest::closest(key, SETTINGS)
                .map_or(String::new(), |name| format!("; did you mean {name}?"));
            return Err(format!(
                "{what}: unknown update setting {key} (settings: {}){hint}",
                SETTINGS.join(", ")
            ));
        }
        let value = match key.as_str() {
            // No checkpoint: clears the one the service keeps from an earlier update.
            "pause_after" if value.is_unit() => "none".into(),
            // Durations as every script function takes them, seconds included.
            "delay" | "monitor" if !value.is_string() => {
                format!("{}ms", super::api::duration_ms(what, value)?).into()
            }
            _ => value.clone(),
        };
        prefixed.insert(format!("update_{key}").into(), value);
    }
    flags(what, &prefixed, For::Update)
}

/// The changes `service update FLAGS SERVICE` would make: to the spec, and to the update
/// settings.
///
/// # Errors
/// Flags the command table refuses, in its words.
pub fn service_changes(
    flags: Vec<String>,
    service: &str,
) -> Result<(ServiceChanges, UpdateFlags), String> {
    let line = ["essaim", "service", "update", "--detach"]
        .into_iter()
        .map(str::to_string)
        .chain(flags)
        .chain([service.to_string()]);
    match Cli::try_parse_from(line).map_err(|e| clap_words("update", &e))? {
        Cli {
            command:
                Some(Command::Service {
                    command: ServiceCommand::Update(args),
                }),
            ..
        } => Ok((args.changes, args.update)),
        _ => Err("update: not an update".to_string()),
    }
}

/// The arguments of `service create` a map of fields stands for.
///
/// # Errors
/// No image, or fields the command table refuses.
pub fn create_args(fields: &Map) -> Result<ServiceCreateArgs, String> {
    let image = fields
        .get("image")
        .map(text)
        .filter(|image| !image.is_empty())
        .ok_or("create_service: the field image is required")?;
    let args = match fields.get("args") {
        Some(value) => words("create_service", "args", value)?,
        None => Vec::new(),
    };
    let line = ["essaim", "service", "create", "--detach"]
        .into_iter()
        .map(str::to_string)
        .chain(flags("create_service", fields, For::Create)?)
        .chain(["--".to_string(), image])
        .chain(args);
    match Cli::try_parse_from(line).map_err(|e| clap_words("create_service", &e))? {
        Cli {
            command:
                Some(Command::Service {
                    command: ServiceCommand::Create(args),
                }),
            ..
        } => Ok(*args),
        _ => Err("create_service: not a create".to_string()),
    }
}

/// `create_network(#{name: "front", subnet: "10.0.9.0/24"})` as `network create` reads it.
///
/// # Errors
/// No name, or a field `network create` does not take or a bad value, named.
pub fn network_create_args(fields: &Map) -> Result<NetworkCreateArgs, String> {
    let name = fields
        .get("name")
        .map(text)
        .filter(|name| !name.is_empty())
        .ok_or("create_network: the field name is required")?;
    let mut others = fields.clone();
    others.remove("name");
    let line = ["essaim", "network", "create"]
        .into_iter()
        .map(str::to_string)
        .chain(flags("create_network", &others, For::Create)?)
        .chain(["--".to_string(), name]);
    match Cli::try_parse_from(line).map_err(|e| clap_words("create_network", &e))? {
        Cli {
            command:
                Some(Command::Network {
                    command: NetworkCommand::Create(args),
                }),
            ..
        } => Ok(args),
        _ => Err("create_network: not a create".to_string()),
    }
}

/// A clap error in the words of a script: fields, not flags.
fn clap_words(what: &str, error: &clap::Error) -> String {
    let text = error.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|line| {
        !line.is_empty() && !line.starts_with("Usage:") && !line.starts_with("For more")
    });
    let first = lines
        .next()
        .unwrap_or("invalid fields")
        .trim_start_matches("error: ");
    let tip = lines.find(|line| line.starts_with("tip:"));
    let message = match tip {
        Some(tip) => format!("{first} ({tip})"),
        None => first.to_string(),
    };
    format!("{what}: {}", fields_not_flags(&message))
}

/// `'--replics <N>'` reads `replics` in a script.
fn fields_not_flags(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find("--") {
        out.push_str(&rest[..at]);
        let flag: String = rest[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        out.push_str(&flag.replace('-', "_"));
        rest = &rest[at + 2 + flag.len()..];
    }
    out.push_str(rest);
    out
}

fn text(value: &Dynamic) -> String {
    match value.clone().into_immutable_string() {
        Ok(text) => text.to_string(),
        Err(_) => value.to_string(),
    }
}

/// `args`: an array of words, or one string split as a shell would.
fn words(what: &str, key: &str, value: &Dynamic) -> Result<Vec<String>, String> {
    if let Some(array) = value.read_lock::<rhai::Array>() {
        return Ok(array.iter().map(text).collect());
    }
    if value.is_string() {
        return crate::cli::parse_command_args(&text(value))
            .map(|args| args.0)
            .map_err(|e| format!("{what}: field {key}: {e}"));
    }
    Err(format!(
        "{what}: field {key} must be an array of strings or a string"
    ))
}

/// Words as one `--args` value that splits back into them.
fn quote_all(words: &[String]) -> String {
    words
        .iter()
        .map(|word| format!("'{}'", word.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(script: &str) -> Map {
        rhai::Engine::new().eval::<Map>(script).expect("a map")
    }

    #[test]
    fn fields_become_the_flags_of_service_update() {
        let flags = from_map(
            "update",
            &map(r#"#{image: "app:2", replicas: 3, env: #{LOG: "info", OLD: ()}, force: true}"#),
        )
        .expect("flags");
        let (changes, _) = service_changes(flags, "web").expect("parsed");
        assert_eq!(changes.image.as_deref(), Some("app:2"));
        assert_eq!(changes.replicas, Some(3));
        assert_eq!(
            changes.env_add,
            vec![("LOG".to_string(), "info".to_string())]
        );
        assert_eq!(changes.env_rm, vec!["OLD".to_string()]);
        assert!(changes.force);
    }

    #[test]
    fn update_settings_become_the_update_flags() {
        let flags = update_config(
            "update",
            &map(r#"#{parallelism: 2, monitor: "1s", pause_after: "50%", order: "start-first"}"#),
        )
        .expect("flags");
        let (_, update) = service_changes(flags, "web").expect("parsed");
        assert_eq!(update.update_parallelism, Some(2));
        assert_eq!(update.update_monitor, Some(1000));
        assert_eq!(
            update.update_pause_after,
            Some(crate::cli::PauseAfter(Some(
                essaim_core::model::Checkpoint::Percent(50)
            )))
        );
        let error = update_config("update", &map("#{paralelism: 2}")).expect_err("typo");
        assert!(error.contains("did you mean parallelism?"), "{error}");
    }

    #[test]
    fn a_checkpoint_kept_by_the_service_can_be_cleared() {
        let flags =
            update_config("update", &map("#{pause_after: (), monitor: 0.5}")).expect("flags");
        let (_, update) = service_changes(flags, "web").expect("parsed");
        assert_eq!(
            update.update_pause_after,
            Some(crate::cli::PauseAfter(None))
        );
        assert_eq!(update.update_monitor, Some(500), "a number is seconds");
        let mut config = essaim_core::model::UpdateConfig {
            pause_after: Some(essaim_core::model::Checkpoint::Tasks(1)),
            ..essaim_core::model::UpdateConfig::default()
        };
        let mut rollback = config.clone();
        update.apply(&mut config, &mut rollback);
        assert_eq!(config.pause_after, None);
        let error = update_config("update", &map("#{pause_after: 0}"))
            .and_then(|flags| service_changes(flags, "web"))
            .expect_err("0 tasks");
        assert!(
            error.contains("none"),
            "the way to clear it is named: {error}"
        );
    }

    #[test]
    fn a_mistyped_field_is_named_with_a_suggestion() {
        let flags = from_map("update", &map("#{replics: 3}")).expect("flags");
        let error = service_changes(flags, "web").expect_err("no such field");
        assert!(error.contains("replics"), "{error}");
        assert!(error.contains("replicas"), "{error}");
        assert!(!error.contains("--"), "{error}");
    }

    #[test]
    fn create_takes_image_args_and_the_create_flags() {
        let args = create_args(&map(
            r#"#{name: "web", image: "sleep", args: ["3600"], replicas: 2, env: #{A: "1"}, publish: ["8080:80"]}"#,
        ))
        .expect("create args");
        assert_eq!(args.name.as_deref(), Some("web"));
        assert_eq!(args.image, "sleep");
        assert_eq!(args.args, vec!["3600"]);
        assert_eq!(args.replicas, Some(2));
        assert_eq!(args.env, vec![("A".to_string(), "1".to_string())]);
        assert!(args.wait.detach);
        let error = create_args(&map(r#"#{name: "x"}"#)).expect_err("no image");
        assert!(error.contains("image is required"), "{error}");
    }

    #[test]
    fn args_keep_their_words() {
        let flags = from_map(
            "update",
            &map(r#"#{args: ["-c", "sleep 10; echo 'done'"]}"#),
        )
        .expect("flags");
        let (changes, _) = service_changes(flags, "web").expect("parsed");
        assert_eq!(
            changes.args.map(|args| args.0),
            Some(vec!["-c".to_string(), "sleep 10; echo 'done'".to_string()])
        );
    }
}
