//! Several `-c` files as one, merged in order as Docker merges them: a later file's mapping
//! keys go over an earlier one's, key by key and level by level; a later list replaces an
//! earlier one, except the lists that name things by key (a service's `environment`,
//! `labels`, `deploy.labels` and `networks`, merged by name; its `ports`, merged by the
//! container's port and protocol; its `secrets` and `configs`, merged by source). Every node
//! keeps the place of the file that gave it.

use super::yaml::{Entry, Node, Value};

/// `base` with `over` merged onto it.
pub fn merge(base: Node, over: Node) -> Node {
    merge_at(base, over, &[])
}

fn merge_at(base: Node, over: Node, path: &[&str]) -> Node {
    match list_rule(path) {
        ListRule::ByName => return merge_at_mappings(by_name(base), by_name(over), path),
        ListRule::Ports => return merge_keyed(base, over, port_key),
        ListRule::BySource => return merge_keyed(base, over, source_key),
        ListRule::Replace => {}
    }
    merge_at_mappings(base, over, path)
}

fn merge_at_mappings(base: Node, over: Node, path: &[&str]) -> Node {
    match (base.value, over.value) {
        (Value::Mapping(mut entries), Value::Mapping(over_entries)) => {
            for over_entry in over_entries {
                match entries.iter_mut().find(|entry| entry.key == over_entry.key) {
                    Some(entry) => {
                        let mut child = path.to_vec();
                        child.push(&over_entry.key);
                        let placeholder = Node {
                            at: entry.value.at.clone(),
                            value: Value::Null,
                        };
                        let earlier = std::mem::replace(&mut entry.value, placeholder);
                        entry.value = merge_at(earlier, over_entry.value, &child);
                        entry.key_at = over_entry.key_at;
                    }
                    None => entries.push(over_entry),
                }
            }
            Node {
                at: base.at,
                value: Value::Mapping(entries),
            }
        }
        // Anything else: the later file's value (a null in it clears nothing: Docker keeps
        // the earlier value when the later file leaves the key empty).
        (earlier, Value::Null) => Node {
            at: base.at,
            value: earlier,
        },
        (_, value) => Node { at: over.at, value },
    }
}

enum ListRule {
    Replace,
    ByName,
    Ports,
    BySource,
}

fn list_rule(path: &[&str]) -> ListRule {
    match path {
        ["services", _, "environment" | "labels" | "networks"]
        | ["services", _, "deploy", "labels"] => ListRule::ByName,
        ["services", _, "ports"] => ListRule::Ports,
        ["services", _, "secrets" | "configs"] => ListRule::BySource,
        _ => ListRule::Replace,
    }
}

/// A list of `KEY=value` (or of names) as the mapping it stands for, so that two files'
/// keys merge one by one.
fn by_name(node: Node) -> Node {
    let Value::Sequence(items) = node.value else {
        return node;
    };
    let entries = items
        .into_iter()
        .map(|item| {
            let (key, value) = match &item.value {
                Value::Scalar { text, quoted } => match text.split_once('=') {
                    Some((key, value)) => (
                        key.to_string(),
                        Value::Scalar {
                            text: value.to_string(),
                            quoted: *quoted,
                        },
                    ),
                    None => (text.clone(), Value::Null),
                },
                // Not a name: kept under a key no file can write, for the reader to refuse.
                _ => (String::new(), item.value.clone()),
            };
            Entry {
                key,
                key_at: item.at.clone(),
                value: Node { at: item.at, value },
            }
        })
        .collect();
    Node {
        at: node.at,
        value: Value::Mapping(entries),
    }
}

/// The earlier file's items, each replaced by a later item of the same `key` (a port's
/// container port and protocol, a secret's source), then the later file's new ones.
fn merge_keyed(base: Node, over: Node, key: fn(&Node) -> Option<String>) -> Node {
    let (Value::Sequence(mut items), Value::Sequence(over_items)) =
        (base.value.clone(), over.value.clone())
    else {
        return merge_at_mappings(base, over, &[]);
    };
    for item in over_items {
        let wanted = key(&item);
        match items
            .iter_mut()
            .find(|earlier| wanted.is_some() && key(earlier) == wanted)
        {
            Some(earlier) => *earlier = item,
            None => items.push(item),
        }
    }
    Node {
        at: base.at,
        value: Value::Sequence(items),
    }
}

/// A field of a long-syntax item, when it is a single value.
fn field(item: &Node, key: &str) -> Option<String> {
    match item.get(key).map(|entry| &entry.value.value) {
        Some(Value::Scalar { text, .. }) => Some(text.clone()),
        _ => None,
    }
}

/// A port's container port and protocol, from the short (`8080:80/udp`) or long form.
fn port_key(port: &Node) -> Option<String> {
    match &port.value {
        Value::Scalar { text, .. } => {
            let (ports, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
            let target = ports.rsplit(':').next().unwrap_or(ports);
            Some(format!("{target}/{protocol}"))
        }
        Value::Mapping(_) => Some(format!(
            "{}/{}",
            field(port, "target")?,
            field(port, "protocol").unwrap_or("tcp".into())
        )),
        _ => None,
    }
}

/// A service's secret or config, by the key it names: the short form's or `source`.
fn source_key(item: &Node) -> Option<String> {
    match &item.value {
        Value::Scalar { text, .. } => Some(text.clone()),
        Value::Mapping(_) => field(item, "source"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::parse;
    use super::*;

    fn text(node: &Node, path: &[&str]) -> Option<String> {
        let mut node = node;
        for key in path {
            node = &node.get(key)?.value;
        }
        match &node.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => None,
        }
    }

    #[test]
    fn later_files_override_key_by_key_and_merge_named_lists() {
        let base = parse(
            "a.yml",
            "services:\n  web:\n    image: nginx:1.25\n    environment: [A=1, B=2]\n    \
             ports: ['8080:80', '9000:90']\n    command: [a, b]\n    deploy:\n      replicas: 2\n",
        )
        .expect("valid");
        let over = parse(
            "b.yml",
            "services:\n  web:\n    image: nginx:1.27\n    environment:\n      B: '3'\n      \
             C: '4'\n    ports: ['8081:80', '53:53/udp']\n    command: [c]\n",
        )
        .expect("valid");
        let merged = merge(base, over);
        let web = &merged.get("services").expect("services").value;
        let web = &web.get("web").expect("web").value;
        assert_eq!(text(web, &["image"]).as_deref(), Some("nginx:1.27"));
        // The image's place is the later file's: an error about it points there.
        assert_eq!(
            web.get("image").expect("image").value.at.file.as_ref(),
            "b.yml"
        );
        assert_eq!(text(web, &["deploy", "replicas"]).as_deref(), Some("2"));
        let env = &web.get("environment").expect("environment").value;
        assert_eq!(text(env, &["A"]).as_deref(), Some("1"));
        assert_eq!(text(env, &["B"]).as_deref(), Some("3"));
        assert_eq!(text(env, &["C"]).as_deref(), Some("4"));
        let Value::Sequence(ports) = &web.get("ports").expect("ports").value.value else {
            panic!("ports are a list");
        };
        let ports: Vec<String> = ports
            .iter()
            .filter_map(|port| match &port.value {
                Value::Scalar { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ports, vec!["8081:80", "9000:90", "53:53/udp"]);
        let Value::Sequence(command) = &web.get("command").expect("command").value.value else {
            panic!("command is a list");
        };
        assert_eq!(command.len(), 1, "a later command replaces the earlier one");
    }
}
