//! A compose file's YAML as a tree whose every node knows its file, line and column, so that
//! any complaint about a key or a value can point at it. Anchors, aliases and merge keys
//! (`<<: *defaults`) are resolved here: what comes out is plain data.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts: `line` and `column` count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub at: Position,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `~`, `null`, or nothing at all after a key.
    Null,
    /// Text as written; `quoted` when it was in quotes (then `"3"` and `"true"` are strings,
    /// never a number or a boolean).
    Scalar {
        text: String,
        quoted: bool,
    },
    Sequence(Vec<Node>),
    Mapping(Vec<Entry>),
}

/// One `key: value` of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_at: Position,
    pub value: Node,
}

impl Node {
    /// What kind of value this is, for "expected a mapping, found a sequence".
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "nothing",
            Value::Scalar { .. } => "a single value",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
        }
    }

    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Mapping(entries) => Some(entries),
            _ => None,
        }
    }

    /// The entry `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|entry| entry.key == key)
    }
}

/// A file that is not YAML, or not YAML a compose file can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub at: Position,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for YamlError {}

/// Parses the one document of `text`; `file` names it in positions. An empty file is `Null`.
///
/// # Errors
/// Broken YAML, several documents, a key that is not a single value, a key given twice, an
/// alias to no anchor, or a merge key that merges no mapping.
pub fn parse(file: &str, text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder {
        file: Arc::from(file),
        stack: Vec::new(),
        anchors: HashMap::new(),
        documents: Vec::new(),
        error: None,
    };
    let mut parser = Parser::new_from_str(text);
    if let Err(error) = parser.load(&mut builder, true) {
        let mark = error.marker();
        return Err(YamlError {
            at: builder.position(*mark),
            message: error.info().to_string(),
        });
    }
    if let Some(error) = builder.error {
        return Err(error);
    }
    let mut documents = builder.documents.into_iter();
    let first = documents.next();
    if let Some(second) = documents.next() {
        return Err(YamlError {
            at: second.at,
            message: "a second YAML document: a compose file holds one".to_string(),
        });
    }
    Ok(first.unwrap_or(Node {
        at: Position {
            file: Arc::from(file),
            line: 1,
            column: 1,
        },
        value: Value::Null,
    }))
}

/// Builds the tree from the parser's events: a stack of the collections still open.
struct Builder {
    file: Arc<str>,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    documents: Vec<Node>,
    /// The first error; later events are ignored once it is set.
    error: Option<YamlError>,
}

struct Open {
    at: Position,
    anchor: usize,
    kind: OpenKind,
}

enum OpenKind {
    Sequence(Vec<Node>),
    /// The entries so far, a key waiting for its value, and what `<<` merges (applied at the
    /// end, under the explicit keys).
    Mapping {
        entries: Vec<Entry>,
        key: Option<(String, Position)>,
        merged: Vec<Entry>,
    },
}

impl Builder {
    fn position(&self, mark: Marker) -> Position {
        Position {
            file: self.file.clone(),
            line: mark.line(),
            column: mark.col() + 1,
        }
    }

    fn fail(&mut self, at: Position, message: String) {
        if self.error.is_none() {
            self.error = Some(YamlError { at, message });
        }
    }

    /// Hands a finished node to the collection it is in, or to the document list.
    fn place(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(open) = self.stack.last_mut() else {
            self.documents.push(node);
            return;
        };
        match &mut open.kind {
            OpenKind::Sequence(items) => items.push(node),
            OpenKind::Mapping {
                entries,
                key,
                merged,
            } => match key.take() {
                None => {
                    let Value::Scalar { text, .. } = node.value else {
                        let at = node.at.clone();
                        let message = format!(
                            "a key must be a single value, not {} (a complex key)",
                            node.kind()
                        );
                        self.fail(at, message);
                        return;
                    };
                    *key = Some((text, node.at));
                }
                Some((name, key_at)) if name == "<<" => {
                    let sources = match node.value {
                        Value::Sequence(items) => items,
                        _ => vec![node],
                    };
                    for source in sources {
                        let Value::Mapping(source_entries) = source.value else {
                            let message = format!(
                                "'<<' merges mappings (an alias like *defaults), not {}",
                                source.kind()
                            );
                            self.fail(key_at.clone(), message);
                            return;
                        };
                        for entry in source_entries {
                            // The first source that has a key gives it, as YAML's merge says.
                            if !merged.iter().any(|m| m.key == entry.key) {
                                merged.push(entry);
                            }
                        }
                    }
                }
                Some((name, key_at)) => {
                    if let Some(first) = entries.iter().find(|entry| entry.key == name) {
                        let message = format!(
                            "the key '{name}' is given twice (first at line {})",
                            first.key_at.line
                        );
                        self.fail(key_at, message);
                        return;
                    }
                    entries.push(Entry {
                        key: name,
                        key_at,
                        value: node,
                    });
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let at = self.position(mark);
        match event {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let value =
                    if !quoted && matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL") {
                        Value::Null
                    } else {
                        Value::Scalar { text, quoted }
                    };
                self.place(Node { at, value }, anchor);
            }
            Event::Alias(anchor) => match self.anchors.get(&anchor) {
                Some(node) => {
                    let node = node.clone();
                    self.place(node, 0);
                }
                None => self.fail(at, "an alias to an anchor not defined before it".into()),
            },
            Event::SequenceStart(anchor, _tag) => self.stack.push(Open {
                at,
                anchor,
                kind: OpenKind::Sequence(Vec::new()),
            }),
            Event::MappingStart(anchor, _tag) => self.stack.push(Open {
                at,
                anchor,
                kind: OpenKind::Mapping {
                    entries: Vec::new(),
                    key: None,
                    merged: Vec::new(),
                },
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(open) = self.stack.pop() else {
                    return;
                };
                let (at, value) = match open.kind {
                    OpenKind::Sequence(items) => {
                        let at = items.first().map_or(open.at, |item| item.at.clone());
                        (at, Value::Sequence(items))
                    }
                    OpenKind::Mapping {
                        mut entries,
                        merged,
                        ..
                    } => {
                        // A block mapping's start mark is where its first key is; point at it.
                        let at = entries
                            .first()
                            .map(|entry| entry.key_at.clone())
                            .or_else(|| merged.first().map(|entry| entry.key_at.clone()))
                            .unwrap_or(open.at);
                        for entry in merged {
                            if !entries.iter().any(|e| e.key == entry.key) {
                                entries.push(entry);
                            }
                        }
                        (at, Value::Mapping(entries))
                    }
                };
                self.place(Node { at, value }, open.anchor);
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &str {
        match &node.value {
            Value::Scalar { text, .. } => text,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn every_node_knows_its_line_and_column() {
        let tree = parse("a.yml", "services:\n  web:\n    image: nginx\n").expect("valid");
        let web = &tree.get("services").expect("services").value;
        let web = web.get("web").expect("web");
        assert_eq!((web.key_at.line, web.key_at.column), (2, 3));
        let image = web.value.get("image").expect("image");
        assert_eq!((image.value.at.line, image.value.at.column), (3, 12));
        assert_eq!(image.value.at.to_string(), "a.yml:3:12");
        assert_eq!(scalar(&image.value), "nginx");
    }

    #[test]
    fn quoted_values_stay_strings_and_bare_null_is_nothing() {
        let tree = parse("f", "a: \"3\"\nb: 3\nc:\nd: ~\n").expect("valid");
        let quoted = |key: &str| match &tree.get(key).expect(key).value.value {
            Value::Scalar { quoted, .. } => Some(*quoted),
            _ => None,
        };
        assert_eq!(quoted("a"), Some(true));
        assert_eq!(quoted("b"), Some(false));
        assert_eq!(tree.get("c").expect("c").value.value, Value::Null);
        assert_eq!(tree.get("d").expect("d").value.value, Value::Null);
    }

    #[test]
    fn anchors_aliases_and_merge_keys_become_plain_data() {
        let text =
            "x-base: &base\n  image: redis\n  replicas: 2\nweb:\n  <<: *base\n  replicas: 5\n";
        let tree = parse("f", text).expect("valid");
        let web = &tree.get("web").expect("web").value;
        assert_eq!(scalar(&web.get("image").expect("image").value), "redis");
        // An explicit key wins over the merged one.
        assert_eq!(scalar(&web.get("replicas").expect("replicas").value), "5");
        assert_eq!(web.entries().expect("mapping").len(), 2);
    }

    #[test]
    fn broken_yaml_says_where() {
        let error = parse("docker-compose.yml", "a:\n  b: [1\nc: 2\n").expect_err("broken");
        assert_eq!(error.at.file.as_ref(), "docker-compose.yml");
        assert_eq!(error.at.line, 3);
        assert!(
            error.to_string().starts_with("docker-compose.yml:3:"),
            "{error}"
        );
    }

    #[test]
    fn a_key_given_twice_is_refused_at_the_second() {
        let error = parse("f", "a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!((error.at.line, error.at.column), (3, 1));
        assert!(error.message.contains("'a' is given twice"), "{error}");
    }

    #[test]
    fn refuses_unknown_aliases_complex_keys_and_second_documents() {
        assert!(parse("f", "a: *nothing\n").is_err());
        assert!(parse("f", "? [a, b]\n: 1\n").is_err());
        let error = parse("f", "a: 1\n---\nb: 2\n").expect_err("two documents");
        assert!(error.message.contains("second YAML document"), "{error}");
        assert_eq!(parse("f", "").expect("empty").value, Value::Null);
    }
}
