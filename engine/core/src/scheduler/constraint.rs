//! Placement constraints as users type them in `--constraint`: `node.labels.zone==a`.

use std::fmt;

use thiserror::Error;

use crate::model::{Node, Role};

/// The fields a constraint may name, for error messages.
const FIELDS: &str =
    "node.id, node.hostname, node.role, node.labels.<key>, node.platform.os or node.platform.arch";

const LABELS_PREFIX: &str = "node.labels.";

/// A node property a constraint or a spread preference looks at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Id,
    Hostname,
    /// The role the operators asked for (the node's spec), as Swarm does.
    Role,
    /// A node label, by key (case kept as typed: label keys are case-sensitive).
    Label(String),
    Os,
    Arch,
}

impl Field {
    /// Reads a field name. Names are case-insensitive as in Swarm; a label key keeps its case.
    fn parse(name: &str) -> Result<Field, FieldError> {
        let lower = name.to_ascii_lowercase();
        let field = match lower.as_str() {
            "node.id" => Field::Id,
            "node.hostname" => Field::Hostname,
            "node.role" => Field::Role,
            "node.platform.os" => Field::Os,
            "node.platform.arch" => Field::Arch,
            "node.labels" => return Err(FieldError::EmptyLabelKey),
            _ if lower.starts_with(LABELS_PREFIX) => {
                let key = &name[LABELS_PREFIX.len()..];
                if key.is_empty() {
                    return Err(FieldError::EmptyLabelKey);
                }
                Field::Label(key.to_string())
            }
            _ => return Err(FieldError::Unknown),
        };
        Ok(field)
    }

    /// Reads a spread preference: the field whose values tasks spread over
    /// (`node.labels.zone`; any constraint field is accepted).
    ///
    /// # Errors
    /// [`ConstraintError::InvalidSpread`] for anything but a field name.
    pub fn parse_spread(text: &str) -> Result<Field, ConstraintError> {
        Field::parse(text.trim()).map_err(|_| ConstraintError::InvalidSpread {
            spread: text.to_string(),
        })
    }

    /// The node's value for this field; `None` for a label the node does not have.
    pub fn value<'n>(&self, node: &'n Node) -> Option<&'n str> {
        match self {
            Field::Id => Some(&node.id),
            Field::Hostname => Some(&node.description.hostname),
            Field::Role => Some(node.spec.role.as_str()),
            Field::Label(key) => node.spec.labels.get(key).map(String::as_str),
            Field::Os => Some(&node.description.os),
            Field::Arch => Some(&node.description.arch),
        }
    }

    /// Whether a node's value equals the value a user typed. Case-insensitive, as Swarm
    /// compares; architectures also match by their other common name (amd64 is x86_64), since
    /// image platforms and `uname` disagree on the spelling.
    fn same(&self, actual: &str, wanted: &str) -> bool {
        if *self == Field::Arch {
            return normalize_arch(actual).eq_ignore_ascii_case(normalize_arch(wanted));
        }
        actual.eq_ignore_ascii_case(wanted)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Id => f.write_str("node.id"),
            Field::Hostname => f.write_str("node.hostname"),
            Field::Role => f.write_str("node.role"),
            Field::Label(key) => write!(f, "{LABELS_PREFIX}{key}"),
            Field::Os => f.write_str("node.platform.os"),
            Field::Arch => f.write_str("node.platform.arch"),
        }
    }
}

fn normalize_arch(arch: &str) -> &str {
    const ALIASES: [(&str, &str); 5] = [
        ("amd64", "x86_64"),
        ("x86-64", "x86_64"),
        ("x86_64", "x86_64"),
        ("arm64", "aarch64"),
        ("aarch64", "aarch64"),
    ];
    ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(arch))
        .map_or(arch, |(_, canonical)| canonical)
}

/// Why a field name was refused, before the caller adds the expression and column.
enum FieldError {
    Unknown,
    EmptyLabelKey,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    Equal,
    NotEqual,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Equal => "==",
            Operator::NotEqual => "!=",
        })
    }
}

/// One placement constraint: a node qualifies when `field op value` holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Constraint {
    pub field: Field,
    pub op: Operator,
    /// As typed, without surrounding spaces; compared case-insensitively.
    pub value: String,
}

/// A constraint or spread preference that cannot be read. Columns count characters from 1.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConstraintError {
    #[error("empty constraint: expected a field, == or != and a value, like node.labels.zone==a")]
    Empty,

    #[error("invalid constraint {expression:?} at column {column}: expected a field: {FIELDS}")]
    MissingField { expression: String, column: usize },

    #[error("unknown field {field:?} in constraint {expression:?}: expected {FIELDS}")]
    UnknownField { field: String, expression: String },

    #[error("empty label key in constraint {expression:?} at column {column}: expected node.labels.<key>")]
    EmptyLabelKey { expression: String, column: usize },

    #[error("invalid constraint {expression:?} at column {column}: expected == or !=")]
    MissingOperator { expression: String, column: usize },

    #[error(
        "empty value in constraint {expression:?} at column {column}: expected a value after {op}"
    )]
    EmptyValue {
        expression: String,
        column: usize,
        op: Operator,
    },

    #[error("invalid role {value:?} in constraint {expression:?} at column {column}: expected manager or worker")]
    InvalidRole {
        value: String,
        expression: String,
        column: usize,
    },

    #[error("invalid spread preference {spread:?}: expected node.labels.<key> (or {FIELDS})")]
    InvalidSpread { spread: String },
}

impl Constraint {
    /// Reads one constraint: `FIELD==VALUE` or `FIELD!=VALUE`, spaces allowed around the
    /// operator.
    ///
    /// # Errors
    /// What is wrong and at which column: a missing or unknown field, an empty label key, a
    /// missing operator, an empty value, or a role other than manager or worker.
    pub fn parse(text: &str) -> Result<Constraint, ConstraintError> {
        let expression = || text.to_string();
        let column = |at: usize| text[..at].chars().count() + 1;

        let start = skip_spaces(text, 0);
        if start == text.len() {
            return Err(ConstraintError::Empty);
        }
        let name_len = text[start..]
            .find(|c: char| c.is_whitespace() || c == '=' || c == '!')
            .unwrap_or(text.len() - start);
        if name_len == 0 {
            return Err(ConstraintError::MissingField {
                expression: expression(),
                column: column(start),
            });
        }
        let name = &text[start..start + name_len];
        let field = Field::parse(name).map_err(|error| match error {
            FieldError::Unknown => ConstraintError::UnknownField {
                field: name.to_string(),
                expression: expression(),
            },
            FieldError::EmptyLabelKey => ConstraintError::EmptyLabelKey {
                expression: expression(),
                // Where the key should have been: right after `node.labels.`.
                column: column(start + name_len),
            },
        })?;

        let op_at = skip_spaces(text, start + name_len);
        let op = if text[op_at..].starts_with("==") {
            Operator::Equal
        } else if text[op_at..].starts_with("!=") {
            Operator::NotEqual
        } else {
            return Err(ConstraintError::MissingOperator {
                expression: expression(),
                column: column(op_at),
            });
        };

        let value_at = skip_spaces(text, op_at + 2);
        let value = text[value_at..].trim_end();
        if value.is_empty() {
            return Err(ConstraintError::EmptyValue {
                expression: expression(),
                column: column(value_at),
                op,
            });
        }
        if field == Field::Role && value.parse::<Role>().is_err() {
            return Err(ConstraintError::InvalidRole {
                value: value.to_string(),
                expression: expression(),
                column: column(value_at),
            });
        }
        Ok(Constraint {
            field,
            op,
            value: value.to_string(),
        })
    }

    /// Whether `node` satisfies the constraint. A node without the label never equals a
    /// value, so `!=` holds for it.
    pub fn matches(&self, node: &Node) -> bool {
        let equal = self
            .field
            .value(node)
            .is_some_and(|actual| self.field.same(actual, &self.value));
        match self.op {
            Operator::Equal => equal,
            Operator::NotEqual => !equal,
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.field, self.op, self.value)
    }
}

/// The byte offset of the first non-space character at or after `at`.
fn skip_spaces(text: &str, at: usize) -> usize {
    text[at..]
        .find(|c: char| !c.is_whitespace())
        .map_or(text.len(), |offset| at + offset)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node(labels: &[(&str, &str)]) -> Node {
        let mut node = crate::testing::node("n1abc", "Worker-1");
        node.spec.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>();
        node
    }

    fn parse(text: &str) -> Constraint {
        Constraint::parse(text).expect("valid constraint")
    }

    fn error(text: &str) -> String {
        Constraint::parse(text)
            .expect_err("invalid constraint")
            .to_string()
    }

    #[test]
    fn every_field_parses_and_prints_back_canonically() {
        for (typed, canonical) in [
            ("node.id==n1abc", "node.id==n1abc"),
            ("node.hostname == worker-1", "node.hostname==worker-1"),
            ("node.role!=manager", "node.role!=manager"),
            (
                "  node.labels.zone  ==  eu-west-1a ",
                "node.labels.zone==eu-west-1a",
            ),
            (
                "Node.Labels.Com.Example.Rack==r1",
                "node.labels.Com.Example.Rack==r1",
            ),
            ("node.platform.os==linux", "node.platform.os==linux"),
            ("NODE.PLATFORM.ARCH != x86_64", "node.platform.arch!=x86_64"),
        ] {
            assert_eq!(parse(typed).to_string(), canonical, "{typed}");
            assert_eq!(parse(canonical), parse(typed), "{typed}");
        }
        assert_eq!(
            parse("node.labels.zone==a"),
            Constraint {
                field: Field::Label("zone".to_string()),
                op: Operator::Equal,
                value: "a".to_string(),
            }
        );
    }

    #[test]
    fn parse_errors_name_the_expression_the_column_and_what_was_expected() {
        assert_eq!(
            error("node.labels.zone=a"),
            r#"invalid constraint "node.labels.zone=a" at column 17: expected == or !="#
        );
        assert_eq!(
            error("node.role"),
            r#"invalid constraint "node.role" at column 10: expected == or !="#
        );
        assert_eq!(
            error("node.role <> worker"),
            r#"invalid constraint "node.role <> worker" at column 11: expected == or !="#
        );
        assert_eq!(
            error("node.foo==a"),
            r#"unknown field "node.foo" in constraint "node.foo==a": expected node.id, node.hostname, node.role, node.labels.<key>, node.platform.os or node.platform.arch"#
        );
        assert_eq!(
            error("node.hostname== "),
            r#"empty value in constraint "node.hostname== " at column 17: expected a value after =="#
        );
        assert_eq!(
            error("node.labels.==a"),
            r#"empty label key in constraint "node.labels.==a" at column 13: expected node.labels.<key>"#
        );
        assert_eq!(
            error("node.labels==a"),
            r#"empty label key in constraint "node.labels==a" at column 12: expected node.labels.<key>"#
        );
        assert_eq!(
            error("node.role==boss"),
            r#"invalid role "boss" in constraint "node.role==boss" at column 12: expected manager or worker"#
        );
        assert!(error(" ==a").contains("at column 2: expected a field"));
        assert!(error("   ").starts_with("empty constraint"));
        // Columns count characters, not bytes.
        assert_eq!(
            error("node.labels.région=a"),
            r#"invalid constraint "node.labels.région=a" at column 19: expected == or !="#
        );
    }

    #[test]
    fn a_missing_label_never_equals_and_always_differs() {
        let zoned = node(&[("zone", "a")]);
        let bare = node(&[]);
        assert!(parse("node.labels.zone==a").matches(&zoned));
        assert!(!parse("node.labels.zone==b").matches(&zoned));
        assert!(!parse("node.labels.zone==a").matches(&bare));
        assert!(!parse("node.labels.zone!=a").matches(&zoned));
        assert!(parse("node.labels.zone!=b").matches(&zoned));
        assert!(parse("node.labels.zone!=a").matches(&bare));
    }

    #[test]
    fn node_properties_match_case_insensitively() {
        let n = node(&[]);
        assert!(parse("node.id==n1abc").matches(&n));
        assert!(parse("node.hostname==worker-1").matches(&n));
        assert!(parse("node.role==Worker").matches(&n));
        assert!(!parse("node.role==manager").matches(&n));
        assert!(parse("node.role!=manager").matches(&n));
        assert!(parse("node.platform.os==Linux").matches(&n));
        assert!(parse("node.platform.arch==x86_64").matches(&n));
        assert!(parse("node.platform.arch==amd64").matches(&n));
        assert!(!parse("node.platform.arch==arm64").matches(&n));
    }

    #[test]
    fn spread_preferences_name_a_field() {
        assert_eq!(
            Field::parse_spread("node.labels.zone"),
            Ok(Field::Label("zone".to_string()))
        );
        assert_eq!(
            Field::parse_spread("zone").map_err(|e| e.to_string()),
            Err(r#"invalid spread preference "zone": expected node.labels.<key> (or node.id, node.hostname, node.role, node.labels.<key>, node.platform.os or node.platform.arch)"#.to_string())
        );
    }
}
