//! `.env` and `env_file:` files as Docker Compose reads them: `KEY=VALUE` a line, `#` comments
//! and blank lines skipped, an optional `export `, values bare, 'single-quoted' (taken as they
//! are) or "double-quoted" (with `\n`, `\t`, `\"` and `\\`). A line with a key alone takes the
//! variable from the environment, in an `env_file:`.

use std::fmt;

/// One line's variable: its name, and its value (none for a key alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub value: Option<String>,
}

/// A line that is not a variable: `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for EnvFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for EnvFileError {}

/// Reads every variable of `text`, in order; the first bad line refuses the whole file.
pub fn parse(text: &str) -> Result<Vec<Variable>, EnvFileError> {
    let mut variables = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let statement = trimmed
            .strip_prefix("export ")
            .unwrap_or(trimmed)
            .trim_start();
        let (name, value) = match statement.split_once('=') {
            Some((name, value)) => (name.trim_end(), Some(value)),
            None => (statement, None),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return Err(EnvFileError {
                line,
                message: format!(
                    "{name:?} is not a variable name (letters, digits, '_', '.' and '-')"
                ),
            });
        }
        let value = value
            .map(|value| read_value(value.trim_start()))
            .transpose()
            .map_err(|message| EnvFileError { line, message })?;
        variables.push(Variable {
            name: name.to_owned(),
            value,
        });
    }
    Ok(variables)
}

fn read_value(text: &str) -> Result<String, String> {
    if let Some(rest) = text.strip_prefix('\'') {
        let Some((value, after)) = rest.split_once('\'') else {
            return Err("a value opened with ' is never closed".to_owned());
        };
        end_after_quote(after)?;
        return Ok(value.to_owned());
    }
    if let Some(rest) = text.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    end_after_quote(chars.as_str())?;
                    return Ok(value);
                }
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some('r') => value.push('\r'),
                    Some(other @ ('"' | '\\' | '$')) => value.push(other),
                    Some(other) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => break,
                },
                _ => value.push(c),
            }
        }
        return Err("a value opened with \" is never closed".to_owned());
    }
    // A bare value ends at a " #" comment.
    let value = match text.find(" #") {
        Some(at) => &text[..at],
        None => text,
    };
    Ok(value.trim_end().to_owned())
}

/// After a quoted value only blanks and a comment may follow.
fn end_after_quote(after: &str) -> Result<(), String> {
    let after = after.trim_start();
    if after.is_empty() || after.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected {after:?} after the quoted value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, Option<String>)> {
        parse(text)
            .expect("parses")
            .into_iter()
            .map(|v| (v.name, v.value))
            .collect()
    }

    fn one(name: &str, value: &str) -> (String, Option<String>) {
        (name.to_owned(), Some(value.to_owned()))
    }

    #[test]
    fn lines_comments_and_export_are_read_as_compose_reads_them() {
        let text = "# the tags\nTAG=1.27\n\n  export PORT = 8080  \nNOTE=a b # a comment\nURL=http://x/#frag\nKEEP\n";
        assert_eq!(
            pairs(text),
            [
                one("TAG", "1.27"),
                one("PORT", "8080"),
                one("NOTE", "a b"),
                one("URL", "http://x/#frag"),
                ("KEEP".to_owned(), None),
            ]
        );
    }

    #[test]
    fn quoted_values_keep_what_they_hold() {
        let text = "A='x #y $Z'\nB=\"line\\nnext \\\"q\\\"\" # c\nC=\nD=''\n";
        assert_eq!(
            pairs(text),
            [
                one("A", "x #y $Z"),
                one("B", "line\nnext \"q\""),
                one("C", ""),
                one("D", ""),
            ]
        );
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let e = parse("A=1\nB C=2\n").expect_err("a space in a name");
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("line 2: \"B C\""), "{e}");
        assert_eq!(parse("A='open\n").expect_err("unclosed").line, 1);
        assert_eq!(parse("\n\nA=\"open\n").expect_err("unclosed").line, 3);
        assert!(parse("A='x' y").is_err());
        assert!(parse("=1").is_err());
    }
}
