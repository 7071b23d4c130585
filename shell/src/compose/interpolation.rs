//! Variable interpolation in one compose value, as Docker Compose does it: `$VAR`, `${VAR}`,
//! `${VAR:-default}` and `${VAR-default}`, `${VAR:?message}` and `${VAR?message}`,
//! `${VAR:+other}` and `${VAR+other}`, and `$$` for a `$`. A default, a message or an
//! alternative may itself hold variables.

use std::fmt;

/// What a value became, and the variables it named that are not set (Docker warns of each and
/// uses a blank string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    pub value: String,
    pub unset: Vec<String>,
}

/// Why a value cannot be interpolated, and where in it: `column` counts characters from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    pub column: usize,
    pub message: String,
}

impl fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InterpolationError {}

/// Substitutes every variable of `text` with what `lookup` gives for its name.
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated, InterpolationError> {
    let chars: Vec<char> = text.chars().collect();
    let mut reader = Reader {
        chars: &chars,
        at: 0,
        lookup,
        unset: Vec::new(),
    };
    let value = reader.text(None)?;
    Ok(Interpolated {
        value,
        unset: reader.unset,
    })
}

struct Reader<'a> {
    chars: &'a [char],
    at: usize,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    unset: Vec<String>,
}

/// What `${NAME<operator>word}` does with its word. A `:` before the operator makes an empty
/// variable count as unset.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Operator {
    /// `-`: the word when the variable is unset.
    Default,
    /// `?`: an error saying the word when the variable is unset.
    Required,
    /// `+`: the word when the variable is set, else nothing.
    Alternative,
}

impl Reader<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn error(&self, at: usize, message: impl Into<String>) -> InterpolationError {
        InterpolationError {
            column: at + 1,
            message: message.into(),
        }
    }

    /// Reads text up to the end, or up to the `}` that closes the braces it is inside
    /// (`inside` holds where they opened), substituting as it goes.
    fn text(&mut self, inside: Option<usize>) -> Result<String, InterpolationError> {
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return match inside {
                        Some(opened) => Err(self.error(
                            opened,
                            "invalid interpolation format: a \"${\" is never closed by \"}\"",
                        )),
                        None => Ok(out),
                    };
                }
                Some('}') if inside.is_some() => return Ok(out),
                Some('$') => out.push_str(&self.dollar()?),
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    /// Reads what starts at a `$`.
    fn dollar(&mut self) -> Result<String, InterpolationError> {
        let start = self.at;
        self.at += 1;
        match self.peek() {
            Some('$') => {
                self.at += 1;
                Ok("$".to_owned())
            }
            Some('{') => {
                self.at += 1;
                self.braced(start)
            }
            Some(c) if is_name_start(c) => {
                let name = self.name();
                Ok(self.value_of(&name).unwrap_or_default())
            }
            // A `$` before anything else is itself, as Compose leaves it.
            _ => Ok("$".to_owned()),
        }
    }

    /// Reads `NAME[operator word]}` after a `${` that opened at `opened`.
    fn braced(&mut self, opened: usize) -> Result<String, InterpolationError> {
        if !self.peek().is_some_and(is_name_start) {
            let found = match self.peek() {
                None => "the end of the value".to_owned(),
                Some(c) => format!("{c:?}"),
            };
            return Err(self.error(
                self.at,
                format!("invalid interpolation format: \"${{\" must be followed by a variable name, found {found}"),
            ));
        }
        let name = self.name();
        let operator_at = self.at;
        if self.peek() == Some('}') {
            self.at += 1;
            return Ok(self.value_of(&name).unwrap_or_default());
        }
        let empty_too = self.peek() == Some(':');
        if empty_too {
            self.at += 1;
        }
        let operator = match self.peek() {
            Some('-') => Operator::Default,
            Some('?') => Operator::Required,
            Some('+') => Operator::Alternative,
            _ if empty_too => {
                return Err(self.error(
                    operator_at,
                    format!("invalid interpolation format for ${{{name}...}}: after \":\" comes \"-\", \"?\" or \"+\""),
                ))
            }
            None => {
                return Err(self.error(
                    opened,
                    "invalid interpolation format: a \"${\" is never closed by \"}\"",
                ))
            }
            Some(c) => {
                return Err(self.error(
                    operator_at,
                    format!("invalid interpolation format for ${{{name}...}}: unexpected {c:?} after the variable name"),
                ))
            }
        };
        self.at += 1;
        // The word is read (and its own variables substituted) whether or not it is used, so
        // that a mistake in it is found the first time, not the day the variable goes unset.
        let word = self.text(Some(opened))?;
        self.at += 1; // the closing brace, which `text` stopped at
        let value = (self.lookup)(&name);
        let missing = match &value {
            None => true,
            Some(v) => empty_too && v.is_empty(),
        };
        match operator {
            Operator::Default if missing => Ok(word),
            Operator::Alternative if missing => Ok(String::new()),
            Operator::Alternative => Ok(word),
            Operator::Required if missing => {
                let why = match (word.is_empty(), empty_too) {
                    (false, _) => format!("required variable {name} is missing a value: {word}"),
                    (true, true) => format!("required variable {name} is missing a value"),
                    (true, false) => format!("required variable {name} is not set"),
                };
                Err(self.error(opened, why))
            }
            Operator::Default | Operator::Required => Ok(value.unwrap_or_default()),
        }
    }

    fn name(&mut self) -> String {
        let start = self.at;
        while self.peek().is_some_and(is_name_char) {
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// The variable's value; an unset one is noted for a warning.
    fn value_of(&mut self, name: &str) -> Option<String> {
        let value = (self.lookup)(name);
        if value.is_none() && !self.unset.iter().any(|n| n == name) {
            self.unset.push(name.to_owned());
        }
        value
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TAG" => Some("1.27".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8080".into()),
            _ => None,
        }
    }

    fn value(text: &str) -> String {
        interpolate(text, &env).expect("interpolates").value
    }

    fn error(text: &str) -> InterpolationError {
        interpolate(text, &env).expect_err("is refused")
    }

    #[test]
    fn plain_and_braced_variables_are_substituted() {
        assert_eq!(value("nginx:$TAG"), "nginx:1.27");
        assert_eq!(value("nginx:${TAG}-alpine"), "nginx:1.27-alpine");
        assert_eq!(value("${PORT}:80"), "8080:80");
        assert_eq!(value("no variables"), "no variables");
    }

    #[test]
    fn a_double_dollar_is_one_dollar_and_a_lone_dollar_stays() {
        assert_eq!(value("echo $$HOME"), "echo $HOME");
        assert_eq!(value("cost: 5$"), "cost: 5$");
        assert_eq!(value("$ 1"), "$ 1");
    }

    #[test]
    fn an_unset_variable_is_blank_and_reported_once() {
        let done = interpolate("$NOPE-${NOPE}-$OTHER", &env).expect("interpolates");
        assert_eq!(done.value, "--");
        assert_eq!(done.unset, ["NOPE", "OTHER"]);
    }

    #[test]
    fn defaults_tell_unset_from_empty() {
        assert_eq!(value("${NOPE:-7}"), "7");
        assert_eq!(value("${NOPE-7}"), "7");
        assert_eq!(value("${EMPTY:-7}"), "7");
        assert_eq!(value("${EMPTY-7}"), "");
        assert_eq!(value("${TAG:-7}"), "1.27");
        assert!(interpolate("${NOPE:-7}", &env)
            .expect("interpolates")
            .unset
            .is_empty());
    }

    #[test]
    fn a_default_may_hold_variables() {
        assert_eq!(value("${NOPE:-${PORT}}"), "8080");
        assert_eq!(value("${NOPE:-v$TAG}"), "v1.27");
        assert_eq!(value("${NOPE:-${ALSO:-x}}"), "x");
    }

    #[test]
    fn a_required_variable_that_is_missing_stops_with_its_message() {
        let e = error("image: ${NOPE:?set NOPE to the image tag}");
        assert_eq!(
            e.message,
            "required variable NOPE is missing a value: set NOPE to the image tag"
        );
        assert_eq!(e.column, 8);
        assert_eq!(
            error("${EMPTY:?}").message,
            "required variable EMPTY is missing a value"
        );
        assert_eq!(value("${EMPTY?}"), "");
        assert_eq!(
            error("${NOPE?}").message,
            "required variable NOPE is not set"
        );
        assert_eq!(value("${TAG:?no tag}"), "1.27");
    }

    #[test]
    fn an_alternative_is_used_only_when_the_variable_is_set() {
        assert_eq!(value("${TAG:+tagged}"), "tagged");
        assert_eq!(value("${NOPE:+tagged}"), "");
        assert_eq!(value("${EMPTY:+tagged}"), "");
        assert_eq!(value("${EMPTY+tagged}"), "tagged");
    }

    #[test]
    fn broken_forms_are_refused_with_their_column() {
        let e = error("a ${TAG");
        assert_eq!(e.column, 3);
        assert!(e.message.contains("never closed"), "{}", e.message);
        let e = error("${}");
        assert_eq!(e.column, 3);
        assert!(e.message.contains("variable name"), "{}", e.message);
        let e = error("${1X}");
        assert!(e.message.contains("'1'"), "{}", e.message);
        let e = error("${TAG:x}");
        assert_eq!(e.column, 6);
        let e = error("${TAG x}");
        assert!(e.message.contains("unexpected ' '"), "{}", e.message);
        // A mistake in a default is found even while the variable is set.
        assert!(interpolate("${TAG:-${}}", &env).is_err());
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(error("été ${X").column, 5);
    }

    #[test]
    fn nothing_panics_on_any_text() {
        // Every prefix of some tricky texts: a truncated value is refused or read, never a panic.
        for text in [
            "${A:-${B:?c}}$$x$",
            "${:}${",
            "$${${A+}}",
            "é${É}",
            "${A-}}",
        ] {
            for end in text.char_indices().map(|(i, _)| i).chain([text.len()]) {
                let _ = interpolate(&text[..end], &env);
            }
        }
    }
}
