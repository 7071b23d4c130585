//! Reading a compose file's values: what each key takes (a number, a duration, a list of
//! strings...), with every complaint at the place of the key or value it is about.

use std::collections::BTreeMap;
use std::fmt;

use super::yaml::{Entry, Node, Position, Value};

/// An error or a warning about one place of a compose file: `file:line:col: key.path: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Position,
    /// Where in the file's structure, as `services.web.deploy.replicas`; empty for the file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.at, self.message)
        } else {
            write!(f, "{}: {}: {}", self.at, self.path, self.message)
        }
    }
}

/// What a key does in a stack, for the keys of one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Read and applied.
    Read,
    /// Docker's stack deploy ignores it too: a warning, with why.
    Ignored(&'static str),
    /// It would change what runs, and essaim cannot do it yet: an error, with what to do.
    NotYet(&'static str),
}

/// The errors and warnings found so far. Reading goes on past an error, so that one run
/// reports every problem of a file; anything with an error deploys nothing.
#[derive(Debug, Default)]
pub struct Reader {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

/// `path.key`, or `key` at the top.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Reader {
    pub fn error(&mut self, at: &Position, path: &str, message: impl Into<String>) {
        self.errors.push(Problem {
            at: at.clone(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub fn warn(&mut self, at: &Position, path: &str, message: impl Into<String>) {
        self.warnings.push(Problem {
            at: at.clone(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The entries of a mapping whose keys are all known (`support` says what each does; None:
    /// unknown). Unknown keys are errors, ignored ones warnings, and neither is returned;
    /// `x-` keys (Compose's extensions) are skipped. Null reads as an empty mapping.
    pub fn mapping<'a>(
        &mut self,
        node: &'a Node,
        path: &str,
        support: &dyn Fn(&str) -> Option<Support>,
    ) -> Vec<&'a Entry> {
        let entries = match &node.value {
            Value::Mapping(entries) => entries,
            Value::Null => return Vec::new(),
            _ => {
                self.error(
                    &node.at,
                    path,
                    format!("expected a mapping of keys, found {}", node.kind()),
                );
                return Vec::new();
            }
        };
        let mut read = Vec::new();
        for entry in entries {
            if entry.key.starts_with("x-") {
                continue;
            }
            let key_path = join(path, &entry.key);
            match support(&entry.key) {
                Some(Support::Read) => read.push(entry),
                Some(Support::Ignored(why)) => self.warn(&entry.key_at, &key_path, why),
                Some(Support::NotYet(what)) => self.error(&entry.key_at, &key_path, what),
                None => self.error(&entry.key_at, &key_path, "unknown key"),
            }
        }
        read
    }

    /// Any single value as text (`3` and `true` too).
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.error(
                    &node.at,
                    path,
                    format!("expected a single value, found {}", node.kind()),
                );
                None
            }
        }
    }

    /// A single value parsed by `parse`, whose error message is kept as it is.
    pub fn parsed<T>(
        &mut self,
        node: &Node,
        path: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.string(node, path)?;
        match parse(&text) {
            Ok(value) => Some(value),
            Err(message) => {
                self.error(&node.at, path, message);
                None
            }
        }
    }

    /// A whole number, 0 or more.
    pub fn count(&mut self, node: &Node, path: &str) -> Option<u64> {
        self.parsed(node, path, |text| {
            text.trim()
                .parse::<u64>()
                .map_err(|_| format!("expected a whole number of 0 or more, found '{text}'"))
        })
    }

    /// `true` or `false` (YAML 1.1's yes/no/on/off too, as Compose files use them).
    pub fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        self.parsed(node, path, |text| {
            match text.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Ok(true),
                "false" | "no" | "off" => Ok(false),
                _ => Err(format!("expected true or false, found '{text}'")),
            }
        })
    }

    /// A duration as Compose writes them (`10s`, `1m30s`, `500ms`), in milliseconds.
    pub fn duration_ms(&mut self, node: &Node, path: &str) -> Option<u64> {
        self.parsed(node, path, essaim_core::time::parse_duration_ms)
    }

    /// A list of single values, or one value alone as a list of one.
    pub fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.string(item, &format!("{path}[{index}]")))
                .collect(),
            Value::Scalar { text, .. } => Some(vec![text.clone()]),
            Value::Null => Some(Vec::new()),
            Value::Mapping(_) => {
                self.error(&node.at, path, "expected a list of values, found a mapping");
                None
            }
        }
    }

    /// A command: a list, or a string split into words as a shell would (quotes kept
    /// together), as Compose does.
    pub fn command(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Scalar { text, .. } => match shell_words(text) {
                Ok(words) => Some(words),
                Err(message) => {
                    self.error(&node.at, path, message);
                    None
                }
            },
            _ => self.strings(node, path),
        }
    }

    /// `environment:`, `labels:` and the like: a mapping (`KEY: value`, a null value being
    /// none) or a list of `KEY=value` (a `KEY` alone being none). In order, later keys over
    /// earlier ones.
    pub fn key_values(&mut self, node: &Node, path: &str) -> Vec<(String, Option<String>)> {
        match &node.value {
            Value::Mapping(entries) => entries
                .iter()
                .filter_map(|entry| {
                    let key_path = join(path, &entry.key);
                    let value = match &entry.value.value {
                        Value::Null => None,
                        _ => Some(self.string(&entry.value, &key_path)?),
                    };
                    Some((entry.key.clone(), value))
                })
                .collect(),
            Value::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(index, item)| {
                    let text = self.string(item, &format!("{path}[{index}]"))?;
                    let (key, value) = match text.split_once('=') {
                        Some((key, value)) => (key.to_string(), Some(value.to_string())),
                        None => (text.clone(), None),
                    };
                    if key.trim().is_empty() {
                        self.error(&item.at, path, format!("'{text}' has no KEY before '='"));
                        return None;
                    }
                    Some((key, value))
                })
                .collect(),
            Value::Null => Vec::new(),
            Value::Scalar { .. } => {
                self.error(
                    &node.at,
                    path,
                    "expected a mapping (KEY: value) or a list of KEY=value, found a single value",
                );
                Vec::new()
            }
        }
    }

    /// Labels: like [`Reader::key_values`], a key alone having an empty value (Docker's way).
    pub fn labels(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        self.key_values(node, path)
            .into_iter()
            .map(|(key, value)| (key, value.unwrap_or_default()))
            .collect()
    }
}

/// Splits `text` into words as a POSIX shell would: blanks separate, 'single' and "double"
/// quotes group, a backslash escapes the next character (outside single quotes).
///
/// # Errors
/// A quote left open, or a backslash at the end.
pub fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => words.extend(word.take()),
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err(format!("a single quote is left open in '{text}'")),
                    }
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err(format!("a double quote is left open in '{text}'")),
                        },
                        Some(c) => current.push(c),
                        None => return Err(format!("a double quote is left open in '{text}'")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("'{text}' ends with a lone backslash")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_split_as_a_shell_does() {
        assert_eq!(
            shell_words(r#"sh -c 'echo "hi there"' a\ b "x\"y" """#).expect("valid"),
            vec!["sh", "-c", "echo \"hi there\"", "a b", "x\"y", ""]
        );
        assert!(shell_words("echo 'open").is_err());
        assert!(shell_words("echo \"open").is_err());
        assert_eq!(shell_words("  ").expect("blank"), Vec::<String>::new());
    }
}
