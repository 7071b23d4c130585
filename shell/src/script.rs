//! Rhai in the shell: a line that is not a command is evaluated as a Rhai expression, with
//! variables kept from line to line, and its result shown: arrays of maps as tables, maps as
//! `key: value` lines. Ctrl-C stops a running evaluation and keeps the session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, ParseErrorType, Position, Scope};

use crate::render;

/// Operations one evaluation may take before it is stopped as a runaway.
const MAX_OPERATIONS: u64 = 50_000_000;

/// The shell's Rhai engine and the variables of the session.
pub struct Script {
    engine: Engine,
    scope: Scope<'static>,
    interrupted: Arc<AtomicBool>,
}

impl Script {
    /// An engine that stops when `interrupted` is set (Ctrl-C), or after too many operations.
    pub fn new(interrupted: Arc<AtomicBool>) -> Script {
        let mut engine = Engine::new();
        engine.set_max_operations(MAX_OPERATIONS);
        let flag = Arc::clone(&interrupted);
        engine.on_progress(move |_| {
            flag.swap(false, Ordering::Relaxed)
                .then(|| Dynamic::from("interrupted by Ctrl-C"))
        });
        Script {
            engine,
            scope: Scope::new(),
            interrupted,
        }
    }

    /// Evaluates one input (a line, or several for a block) in the session's scope.
    ///
    /// # Errors
    /// The input does not parse, or fails as it runs; the message has its line and column.
    pub fn eval(&mut self, input: &str) -> Result<Dynamic, String> {
        self.interrupted.store(false, Ordering::Relaxed);
        self.engine
            .eval_with_scope::<Dynamic>(&mut self.scope, input)
            .map_err(|error| describe(&error, input))
    }
}

/// True when `input` is a Rhai expression cut short: an open block or string, or an
/// operator waiting for its operand. The REPL then reads another line.
pub fn is_incomplete(engine: &Engine, input: &str) -> bool {
    let Err(error) = engine.compile(input) else {
        return false;
    };
    match error.err_type() {
        ParseErrorType::UnexpectedEOF => true,
        ParseErrorType::BadInput(rhai::LexError::UnterminatedString) => true,
        ParseErrorType::MissingToken(..)
        | ParseErrorType::MissingSymbol(..)
        | ParseErrorType::ExprExpected(..) => at_end(error.position(), input),
        _ => false,
    }
}

/// True when `position` is past the last non-blank character of `input`: the parser ran out
/// of input rather than meeting something wrong.
fn at_end(position: Position, input: &str) -> bool {
    let (Some(line), Some(column)) = (position.line(), position.position()) else {
        return true;
    };
    let lines: Vec<&str> = input.trim_end().lines().collect();
    match line.cmp(&lines.len()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => column > lines.last().map_or(0, |l| l.chars().count()),
    }
}

/// An error with its place: `line 2, column 5: ...`, and the line it points at.
fn describe(error: &EvalAltResult, input: &str) -> String {
    let position = error.position();
    let mut message = match error {
        EvalAltResult::ErrorTerminated(why, _) => format!("script stopped: {why}"),
        other => other.to_string(),
    };
    // Rhai appends " (line L, position P)"; we say it our way, first.
    if let Some(cut) = message.rfind(" (line ") {
        message.truncate(cut);
    }
    match (position.line(), position.position()) {
        (Some(line), column) => {
            let column = column.unwrap_or(1);
            let mut text = format!("line {line}, column {column}: {message}");
            if let Some(source) = input.lines().nth(line.saturating_sub(1)) {
                text.push_str(&format!(
                    "\n  {source}\n  {}^",
                    " ".repeat(column.saturating_sub(1))
                ));
            }
            text
        }
        (None, _) => message,
    }
}

/// A result as the shell shows it; empty for `()`.
pub fn show(value: &Dynamic) -> String {
    if value.is_unit() {
        return String::new();
    }
    if let Some(array) = value.read_lock::<rhai::Array>() {
        return show_array(&array);
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        return show_map(&map);
    }
    let mut text = value.to_string();
    text.push('\n');
    text
}

fn show_array(array: &rhai::Array) -> String {
    let maps: Vec<_> = array
        .iter()
        .filter_map(|item| item.read_lock::<rhai::Map>().map(|map| map.clone()))
        .collect();
    if maps.is_empty() || maps.len() != array.len() {
        let mut text = String::new();
        for item in array {
            text.push_str(&cell(item));
            text.push('\n');
        }
        return text;
    }
    // Columns in the order keys are first met.
    let mut header: Vec<String> = Vec::new();
    for map in &maps {
        for key in map.keys() {
            if !header.iter().any(|k| k == key.as_str()) {
                header.push(key.to_string());
            }
        }
    }
    let rows = maps
        .iter()
        .map(|map| {
            header
                .iter()
                .map(|key| map.get(key.as_str()).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let header: Vec<String> = header.iter().map(|key| key.to_uppercase()).collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    render::toned_columns(&header, rows, |_, text| crate::style::Tone::of_state(text))
}

fn show_map(map: &rhai::Map) -> String {
    let width = map.keys().map(|key| key.len() + 1).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in map {
        text.push_str(&format!("{:<width$}  {}\n", format!("{key}:"), cell(value)));
    }
    text
}

/// A value in one cell: strings bare, the rest as Rhai writes them.
fn cell(value: &Dynamic) -> String {
    match value.clone().into_immutable_string() {
        Ok(text) => text.to_string(),
        Err(_) if value.is_unit() => String::new(),
        Err(_) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script() -> Script {
        Script::new(Arc::new(AtomicBool::new(false)))
    }

    #[test]
    fn variables_live_from_line_to_line() {
        let mut script = script();
        let _ = script.eval("let n = 20;").expect("let");
        let value = script.eval("n * 2 + 2").expect("expression");
        assert_eq!(show(&value), "42\n");
    }

    #[test]
    fn arrays_of_maps_are_tables_and_maps_are_listings() {
        let mut script = script();
        let table = show(
            &script
                .eval(r#"[#{name: "web", replicas: 3}, #{name: "api", replicas: 1, note: "x"}]"#)
                .expect("array"),
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{table}");
        assert!(
            lines[0].contains("REPLICAS") && lines[0].contains("NOTE"),
            "{table}"
        );
        assert!(
            lines[1].starts_with("web") && lines[1].contains('3'),
            "{table}"
        );
        let listing = show(
            &script
                .eval(r#"#{image: "nginx", replicas: 3}"#)
                .expect("map"),
        );
        assert_eq!(listing, "image:     nginx\nreplicas:  3\n");
        assert_eq!(show(&script.eval("()").expect("unit")), "");
        assert_eq!(show(&script.eval(r#""text""#).expect("string")), "text\n");
    }

    #[test]
    fn open_blocks_and_strings_ask_for_more_input() {
        let engine = Engine::new();
        assert!(is_incomplete(&engine, "if true {"));
        assert!(is_incomplete(&engine, "let s = \"abc"));
        assert!(is_incomplete(&engine, "fn f(x) {\n  x +"));
        assert!(is_incomplete(&engine, "[1, 2,"));
        assert!(!is_incomplete(&engine, "if true { 1 }"));
        assert!(
            !is_incomplete(&engine, "1 +* 2"),
            "a real error is not incomplete"
        );
        assert!(!is_incomplete(&engine, "let = 5"));
    }

    #[test]
    fn errors_say_where() {
        let mut script = script();
        let error = script
            .eval("let x = 1;\nx + y")
            .expect_err("unknown variable");
        assert!(error.starts_with("line 2, column 5:"), "{error}");
        assert!(error.contains("Variable not found: y"), "{error}");
        assert!(error.contains("\n  x + y\n      ^"), "{error}");
    }

    #[test]
    fn a_runaway_loop_is_stopped() {
        let mut script = script();
        script.engine.set_max_operations(10_000);
        let error = script.eval("loop { }").expect_err("stopped");
        assert!(error.contains("Too many operations"), "{error}");
    }

    #[test]
    fn an_interrupt_stops_the_evaluation() {
        let flag = Arc::new(AtomicBool::new(false));
        let mut script = Script::new(Arc::clone(&flag));
        let setter = Arc::clone(&flag);
        let done = Arc::new(AtomicBool::new(false));
        let finished = Arc::clone(&done);
        // Presses Ctrl-C (sets the flag) until the script has stopped.
        let thread = std::thread::spawn(move || {
            while !finished.load(Ordering::Relaxed) {
                setter.store(true, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        let error = script.eval("loop { }").expect_err("interrupted");
        done.store(true, Ordering::Relaxed);
        thread.join().expect("setter");
        assert!(error.contains("interrupted"), "{error}");
    }
}
