//! Swarm's placeholders in a service's `--hostname`, `--env` values and `--mount` sources:
//! `{{.Task.Slot}}`, `{{.Node.Hostname}}`... Each task gets its own values, filled in on its
//! node when it starts: `--hostname "{{.Service.Name}}-{{.Task.Slot}}"` names the containers
//! `web-1`, `web-2`, ...

/// What the placeholders stand for, for one task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateValues {
    pub service_id: String,
    pub service_name: String,
    pub task_id: String,
    /// `web.1.TASKID`, or `web.NODEID.TASKID` for a global service.
    pub task_name: String,
    /// Empty for a global service, as in Swarm.
    pub task_slot: String,
    pub node_id: String,
    pub node_hostname: String,
    pub node_os: String,
    pub node_arch: String,
}

/// The placeholders, as written between `{{` and `}}`.
pub const FIELDS: &[&str] = &[
    ".Service.ID",
    ".Service.Name",
    ".Task.ID",
    ".Task.Name",
    ".Task.Slot",
    ".Node.ID",
    ".Node.Hostname",
    ".Node.Platform.OS",
    ".Node.Platform.Architecture",
];

impl TemplateValues {
    fn get(&self, field: &str) -> Option<&str> {
        Some(match field {
            ".Service.ID" => &self.service_id,
            ".Service.Name" => &self.service_name,
            ".Task.ID" => &self.task_id,
            ".Task.Name" => &self.task_name,
            ".Task.Slot" => &self.task_slot,
            ".Node.ID" => &self.node_id,
            ".Node.Hostname" => &self.node_hostname,
            ".Node.Platform.OS" => &self.node_os,
            ".Node.Platform.Architecture" => &self.node_arch,
            _ => return None,
        })
    }
}

/// `text` with each placeholder replaced through `value`.
fn fill(text: &str, mut value: impl FnMut(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("{{{{ without }}}} in {text:?}"))?;
        let field = after[..end].trim();
        let filled = value(field).ok_or_else(|| {
            format!(
                "unknown placeholder {{{{{field}}}}} in {text:?} (placeholders: {})",
                FIELDS.join(", ")
            )
        })?;
        out.push_str(&filled);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks that every placeholder of `text` is one of [`FIELDS`].
///
/// # Errors
/// An unknown placeholder, or `{{` left open.
pub fn check(text: &str) -> Result<(), String> {
    fill(text, |field| FIELDS.contains(&field).then(String::new)).map(|_| ())
}

/// `text` with its placeholders filled in for one task.
///
/// # Errors
/// As [`check`].
pub fn expand(text: &str, values: &TemplateValues) -> Result<String, String> {
    fill(text, |field| values.get(field).map(str::to_string))
}

/// Whether `text` holds a placeholder at all.
pub fn has_placeholders(text: &str) -> bool {
    text.contains("{{")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues {
        TemplateValues {
            service_name: "web".into(),
            task_slot: "2".into(),
            node_hostname: "worker-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn placeholders_take_the_task_s_values() {
        assert_eq!(
            expand("{{.Service.Name}}-{{ .Task.Slot }}", &values()),
            Ok("web-2".to_string())
        );
        assert_eq!(
            expand("/data/{{.Node.Hostname}}", &values()),
            Ok("/data/worker-1".to_string())
        );
        assert_eq!(expand("plain", &values()), Ok("plain".to_string()));
    }

    #[test]
    fn unknown_or_open_placeholders_are_errors_naming_them() {
        let unknown = check("{{.Service.Labels}}").expect_err("unknown");
        assert!(
            unknown.contains("unknown placeholder {{.Service.Labels}}"),
            "{unknown}"
        );
        assert!(
            unknown.contains(".Task.Slot"),
            "lists the known ones: {unknown}"
        );
        assert!(check("web-{{.Task.Slot")
            .expect_err("open")
            .contains("without }}"));
        assert_eq!(check("{{.Node.ID}}"), Ok(()));
    }
}
