//! Rhai in the shell: a line of the REPL that is not a command, `essaim -c EXPR`, and
//! `essaim run FILE.rhai`. Scripts see the cluster as objects (`nodes()`, `service("web")`,
//! ...: [`api`] and [`objects`]); results are shown as tables (arrays of objects or maps) or
//! `key: value` lines (maps). Runaway scripts are stopped: an operation limit, the deadline of
//! `--timeout`, and Ctrl-C.
//!
//! # Layout
//! - [`api`]: the functions scripts call.
//! - [`objects`]: the Node, Service and Task types.
//! - [`flags`]: maps of fields read as the flags of `service create` and `update`.
//! - [`value`]: conversions (JSON, string maps).
//! - [`runner`]: `essaim run` and `essaim -c`: a script as a cron job runs it.

pub mod api;
pub mod flags;
pub mod objects;
pub mod runner;
pub mod value;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, ParseErrorType, Position, Scope};

use crate::connection::Connection;
use crate::render;

/// Operations one evaluation may take before it is stopped as a runaway.
pub const MAX_OPERATIONS: u64 = 50_000_000;

/// Why a script was stopped from outside: it ends the script, `catch` cannot stop it.
#[derive(Clone, Debug)]
pub enum Stop {
    Interrupted,
    /// `--timeout` ran out.
    TimedOut(String),
    /// The `--lock` lease could not be kept: another run may be under way.
    LockLost(String),
}

impl Stop {
    pub fn exit(&self) -> i32 {
        match self {
            Stop::Interrupted => 130,
            Stop::TimedOut(_) => 4,
            Stop::LockLost(_) => i32::from(runner::LOCK_HELD),
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Interrupted => f.write_str("interrupted by Ctrl-C"),
            Stop::TimedOut(why) | Stop::LockLost(why) => f.write_str(why),
        }
    }
}

/// Why a script stopped without a result.
#[derive(Debug)]
pub struct ScriptError {
    /// What went wrong, with the file, line and column and the line itself.
    pub message: String,
    /// The exit code it means (see `essaim run --help`).
    pub exit: i32,
    /// What `exit(code, result)` gave.
    pub result: Option<Dynamic>,
}

/// The shell's Rhai engine and the variables of the session.
pub struct Script {
    engine: Engine,
    scope: Scope<'static>,
    interrupted: Arc<AtomicBool>,
    conn: Option<Rc<Connection>>,
    /// The `--arg` values `arg_int()` and its kin read (the `args` map holds them too).
    args: Rc<RefCell<rhai::Map>>,
}

impl Script {
    /// An engine with no cluster: plain Rhai and the helpers.
    #[cfg(test)]
    pub fn new(interrupted: Arc<AtomicBool>) -> Script {
        Script::build(interrupted, None)
    }

    /// An engine whose functions reach the cluster through `conn`.
    pub fn with_cluster(interrupted: Arc<AtomicBool>, conn: Rc<Connection>) -> Script {
        Script::build(interrupted, Some(conn))
    }

    fn build(interrupted: Arc<AtomicBool>, conn: Option<Rc<Connection>>) -> Script {
        let mut engine = Engine::new();
        engine.set_max_operations(MAX_OPERATIONS);
        let flag = Arc::clone(&interrupted);
        let deadline = conn.clone();
        engine.on_progress(move |_| {
            if flag.swap(false, Ordering::Relaxed) {
                return Some(Dynamic::from(Stop::Interrupted));
            }
            let conn = deadline.as_ref()?;
            if let Some(reason) = conn.lock_lost() {
                return Some(Dynamic::from(Stop::LockLost(reason)));
            }
            let late = conn.past_deadline()?;
            Some(Dynamic::from(Stop::TimedOut(late.0)))
        });
        objects::register(&mut engine);
        api::register_helpers(&mut engine);
        let args = Rc::new(RefCell::new(rhai::Map::new()));
        api::register_args(&mut engine, &args);
        if let Some(conn) = &conn {
            api::register_cluster(&mut engine, conn);
        }
        Script {
            engine,
            scope: Scope::new(),
            interrupted,
            conn,
            args,
        }
    }

    /// The `--arg KEY=VALUE` values: the `args` map, and what `arg_int()` and its kin read.
    pub fn set_args(&mut self, args: rhai::Map) {
        *self.args.borrow_mut() = args.clone();
        self.scope.push_constant("args", args);
    }

    /// Imports resolve next to `dir` first, then in the scripts directory.
    pub fn resolve_imports_from(&mut self, dir: &Path) {
        use rhai::module_resolvers::{FileModuleResolver, ModuleResolversCollection};
        let mut resolvers = ModuleResolversCollection::new();
        resolvers.push(FileModuleResolver::new_with_path(dir));
        resolvers.push(FileModuleResolver::new_with_path(scripts_dir()));
        self.engine.set_module_resolver(resolvers);
    }

    /// Sends `print` to stderr (when stdout holds one JSON document).
    pub fn print_to_stderr(&mut self) {
        self.engine.on_print(|text| eprintln!("{text}"));
    }

    pub fn scope_mut(&mut self) -> &mut Scope<'static> {
        &mut self.scope
    }

    pub fn set_max_operations(&mut self, operations: u64) {
        self.engine.set_max_operations(operations);
    }

    /// Evaluates one input (a line, or several for a block) in the session's scope.
    ///
    /// # Errors
    /// The input does not parse, or fails as it runs; the message has its line and column.
    pub fn eval(&mut self, input: &str) -> Result<Dynamic, String> {
        self.run(input, None).map_err(|error| error.message)
    }

    /// Evaluates a whole script; `source` names it in errors.
    ///
    /// # Errors
    /// See [`ScriptError`].
    pub fn run(&mut self, input: &str, source: Option<&str>) -> Result<Dynamic, ScriptError> {
        self.interrupted.store(false, Ordering::Relaxed);
        let mut ast = self.engine.compile(input).map_err(|error| ScriptError {
            message: describe(&self.engine, &EvalAltResult::from(error), input, source),
            exit: 1,
            result: None,
        })?;
        if let Some(source) = source {
            ast.set_source(source);
        }
        self.engine
            .eval_ast_with_scope::<Dynamic>(&mut self.scope, &ast)
            .map_err(|error| self.failure(&error, input, source))
    }

    fn failure(&self, error: &EvalAltResult, input: &str, source: Option<&str>) -> ScriptError {
        if let EvalAltResult::ErrorTerminated(value, _) = error {
            if let Some(exit) = value.read_lock::<api::ScriptExit>() {
                return ScriptError {
                    message: String::new(),
                    exit: i32::try_from(exit.code).unwrap_or(1),
                    result: exit.result.clone(),
                };
            }
        }
        let message = describe(&self.engine, error, input, source);
        let exit = match error {
            EvalAltResult::ErrorTerminated(value, _) => {
                value.read_lock::<Stop>().map_or(1, |stop| stop.exit())
            }
            EvalAltResult::ErrorTooManyOperations(_) => 1,
            _ => self
                .conn
                .as_ref()
                .and_then(|conn| conn.exit_of_last_error(&message))
                .unwrap_or(1),
        };
        ScriptError {
            message,
            exit,
            result: None,
        }
    }

    /// The names of the functions and fields scripts can use (the documentation test reads
    /// them).
    #[cfg(test)]
    pub fn function_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .engine
            .gen_fn_signatures(false)
            .into_iter()
            .filter_map(|signature| {
                let name = signature.split('(').next()?.trim().to_string();
                Some(name.trim_start_matches("get$").to_string())
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Where `import` looks after the script's own directory: `$ESSAIM_SCRIPTS_DIR`, else
/// `scripts` in the data dir.
pub fn scripts_dir() -> std::path::PathBuf {
    std::env::var_os("ESSAIM_SCRIPTS_DIR").map_or_else(
        || essaim_api::paths::default_data_dir().join("scripts"),
        std::path::PathBuf::from,
    )
}

/// A value with its objects turned into their data, for JSON.
pub fn plain(value: &Dynamic) -> Dynamic {
    if let Some(node) = value.read_lock::<objects::Node>() {
        return rhai::serde::to_dynamic(&node.view).unwrap_or(Dynamic::UNIT);
    }
    if let Some(service) = value.read_lock::<objects::Service>() {
        return rhai::serde::to_dynamic(&service.view).unwrap_or(Dynamic::UNIT);
    }
    if let Some(task) = value.read_lock::<objects::Task>() {
        return rhai::serde::to_dynamic(&task.view).unwrap_or(Dynamic::UNIT);
    }
    if let Some(array) = value.read_lock::<rhai::Array>() {
        return array.iter().map(plain).collect::<rhai::Array>().into();
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        return map
            .iter()
            .map(|(key, value)| (key.clone(), plain(value)))
            .collect::<rhai::Map>()
            .into();
    }
    value.clone()
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

/// An error with its place: `FILE:2:5: ...` (or `line 2, column 5: ...`), the line it points
/// at, and a "did you mean" for a mistyped field or function.
fn describe(engine: &Engine, error: &EvalAltResult, input: &str, source: Option<&str>) -> String {
    // The innermost error says what went wrong; Rhai wraps errors of functions in others.
    let mut inner = error;
    while let EvalAltResult::ErrorInFunctionCall(_, _, cause, _)
    | EvalAltResult::ErrorInModule(_, cause, _) = inner
    {
        inner = cause;
    }
    let position = error.position();
    let mut message = match inner {
        EvalAltResult::ErrorTerminated(why, _) => match why.read_lock::<Stop>() {
            Some(stop) => format!("script stopped: {}", *stop),
            None => format!("script stopped: {why}"),
        },
        EvalAltResult::ErrorRuntime(value, _) if value.is_string() => value.to_string(),
        // A caught error thrown again: its message.
        EvalAltResult::ErrorRuntime(value, _) if value.is_map() => value
            .read_lock::<rhai::Map>()
            .and_then(|map| map.get("message").map(ToString::to_string))
            .unwrap_or_else(|| value.to_string()),
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "too many operations: the script ran past the limit of {} (--max-operations N \
             raises it)",
            engine.max_operations()
        ),
        other => other.to_string(),
    };
    // Rhai appends " (line L, position P)"; we say it our way, first.
    if let Some(cut) = message.rfind(" (line ") {
        message.truncate(cut);
    }
    if let Some(hint) = did_you_mean(engine, inner) {
        message.push_str(&hint);
    }
    match (position.line(), position.position()) {
        (Some(line), column) => {
            let column = column.unwrap_or(1);
            let mut text = match source {
                Some(file) => format!("{file}:{line}:{column}: {message}"),
                None => format!("line {line}, column {column}: {message}"),
            };
            if let Some(source) = input.lines().nth(line.saturating_sub(1)) {
                text.push_str(&format!(
                    "\n  {source}\n  {}^",
                    " ".repeat(column.saturating_sub(1))
                ));
            }
            text
        }
        (None, _) => match source {
            Some(file) => format!("{file}: {message}"),
            None => message,
        },
    }
}

/// "; did you mean replicas?" for a field or function that does not exist.
fn did_you_mean(engine: &Engine, error: &EvalAltResult) -> Option<String> {
    let (word, candidates): (String, Vec<&str>) = match error {
        EvalAltResult::ErrorDotExpr(text, _) | EvalAltResult::ErrorPropertyNotFound(text, _) => {
            let name = text
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .find(|word| {
                    !word.is_empty() && !matches!(*word, "Unknown" | "property" | "for" | "type")
                })?
                .to_string();
            let fields = [
                objects::NODE_FIELDS,
                objects::SERVICE_FIELDS,
                objects::TASK_FIELDS,
            ]
            .concat();
            (name, fields)
        }
        EvalAltResult::ErrorFunctionNotFound(signature, _) => {
            let name = signature.split(['(', ' ']).next()?.to_string();
            if api::FUNCTIONS.contains(&name.as_str()) {
                return Some(format!(
                    "; {name} takes other arguments: {} (see docs/scripting.md)",
                    signatures(engine, &name).join(", ")
                ));
            }
            (name, api::FUNCTIONS.to_vec())
        }
        _ => return None,
    };
    essaim_core::suggest::closest(&word, candidates).map(|name| format!("; did you mean {name}?"))
}

/// How `name` may be called, in a script's words: `Service.scale(int)`, `sleep(string)`.
fn signatures(engine: &Engine, name: &str) -> Vec<String> {
    let words = |kind: &str| -> Option<String> {
        let kind = kind
            .trim()
            .trim_start_matches("&mut ")
            .trim_start_matches('&');
        let kind = kind.rsplit("::").next().unwrap_or(kind);
        Some(
            match kind {
                "NativeCallContext" => return None,
                "i64" | "INT" => "int",
                "f64" | "FLOAT" => "float",
                "str" | "String" | "ImmutableString" => "string",
                "Dynamic" => "any",
                "Map" => "map",
                "Array" => "array",
                "FnPtr" => "function",
                "()" => "()",
                other => other,
            }
            .to_string(),
        )
    };
    let mut found: Vec<String> = engine
        .gen_fn_signatures(false)
        .into_iter()
        .filter_map(|signature| {
            let (called, rest) = signature.split_once('(')?;
            if called.trim() != name {
                return None;
            }
            let parameters = rest.split(')').next()?;
            let kinds: Vec<String> = parameters
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .filter_map(|p| words(p.rsplit(':').next().unwrap_or(p)))
                .collect();
            // Methods are shown on their type: the first parameter is the object.
            Some(match kinds.split_first() {
                Some((first, others)) if matches!(first.as_str(), "Node" | "Service" | "Task") => {
                    format!("{first}.{name}({})", others.join(", "))
                }
                _ => format!("{name}({})", kinds.join(", ")),
            })
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// A result as the shell shows it; empty for `()`.
pub fn show(value: &Dynamic) -> String {
    if value.is_unit() {
        return String::new();
    }
    if let Some(row) = objects::row_of(value) {
        return show_rows(&[row]);
    }
    if let Some(array) = value.read_lock::<rhai::Array>() {
        let rows: Option<Vec<objects::Row>> = array.iter().map(objects::row_of).collect();
        return match rows {
            Some(rows) if !rows.is_empty() => show_rows(&rows),
            _ => show_array(&array),
        };
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

/// Objects as a table; objects of several kinds share the columns they have in common.
fn show_rows(rows: &[objects::Row]) -> String {
    let header: Vec<&str> = rows[0]
        .iter()
        .map(|(column, _)| *column)
        .filter(|column| rows.iter().all(|row| row.iter().any(|(c, _)| c == column)))
        .collect();
    let cells = rows
        .iter()
        .map(|row| {
            header
                .iter()
                .map(|column| {
                    row.iter()
                        .find(|(c, _)| c == column)
                        .map(|(_, text)| text.clone())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();
    render::toned_columns(&header, cells, |_, text| crate::style::Tone::of_state(text))
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

    /// A connection whose every call fails: enough to register the cluster functions.
    fn offline() -> Rc<Connection> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = crate::client::Client::from_fn(|_| {
            Box::pin(async { Err(essaim_api::ControlError::Unavailable("offline".into())) })
        });
        Rc::new(Connection::new(runtime, client))
    }

    #[test]
    fn every_function_and_field_is_documented() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/scripting.md");
        let docs = std::fs::read_to_string(path).expect("docs/scripting.md");
        let script = Script::with_cluster(Arc::new(AtomicBool::new(false)), offline());
        let names = script.function_names();
        assert!(names.len() > 40, "{names:?}");
        let missing: Vec<&String> = names
            .iter()
            .filter(|name| {
                !docs.contains(&format!("`{name}`")) && !docs.contains(&format!("`{name}("))
            })
            .collect();
        assert!(missing.is_empty(), "not in docs/scripting.md: {missing:?}");
        // The names "did you mean" offers are the registered ones.
        for name in api::FUNCTIONS {
            assert!(names.iter().any(|n| n == name), "{name} is not registered");
        }
        for field in [
            objects::NODE_FIELDS,
            objects::SERVICE_FIELDS,
            objects::TASK_FIELDS,
        ]
        .concat()
        {
            assert!(names.iter().any(|n| n == field), "{field} is not a field");
        }
    }

    #[test]
    fn calls_fail_as_errors_a_script_can_catch() {
        let mut script = Script::with_cluster(Arc::new(AtomicBool::new(false)), offline());
        let value = script
            .eval(r#"let r = "none"; try { services() } catch (e) { r = `${e}` } r"#)
            .expect("caught");
        assert!(value.to_string().contains("offline"), "{value}");
    }

    fn script() -> Script {
        Script::new(Arc::new(AtomicBool::new(false)))
    }

    fn online() -> Script {
        Script::with_cluster(Arc::new(AtomicBool::new(false)), offline())
    }

    #[test]
    fn a_caught_error_says_where_the_call_was_and_what_was_meant() {
        let mut script = online();
        let input = "let r = ();\ntry {\n    tasks(#{state: \"runing\"})\n} catch (e) { r = e }\nr";
        let caught = script.run(input, Some("t.rhai")).expect("caught");
        let caught = caught.read_lock::<rhai::Map>().expect("a map").clone();
        let field = |key: &str| caught.get(key).map(ToString::to_string).unwrap_or_default();
        assert!(field("message").contains("not a task state"), "{caught:?}");
        assert_eq!(field("source"), "t.rhai", "{caught:?}");
        assert_eq!(field("line"), "3", "{caught:?}");
        assert_eq!(field("column"), "5", "{caught:?}");
        assert_eq!(field("suggestion"), "running", "{caught:?}");
        // Thrown again, it reads as any uncaught error.
        let error = script
            .eval("try { services() } catch (e) { throw e }")
            .expect_err("thrown again");
        assert!(
            error.contains("offline") && !error.contains("#{"),
            "{error}"
        );
    }

    #[test]
    fn durations_are_read_the_same_everywhere() {
        let ms = |value: Dynamic| api::duration_ms("sleep", &value);
        assert_eq!(ms("0.1".into()), Ok(100));
        assert_eq!(ms("1.5s".into()), Ok(1500));
        assert_eq!(ms("30".into()), Ok(30_000));
        assert_eq!(ms("1m30s".into()), Ok(90_000));
        assert_eq!(ms(Dynamic::from(30_i64)), Ok(30_000));
        assert_eq!(ms(Dynamic::from(0.25_f64)), Ok(250));
        assert!(ms("soon".into()).is_err());
        let mut script = online();
        let slept = script
            .eval(r#"sleep("0.05"); sleep("0.05s"); sleep(0.05); sleep(0); 1"#)
            .expect("every kind of duration");
        assert_eq!(slept.as_int(), Ok(1));
    }

    #[test]
    fn a_misspelt_method_gets_a_suggestion_and_wrong_arguments_the_signatures() {
        let mut script = online();
        let error = script
            .eval("let n = 1; n.drian()")
            .expect_err("no such method");
        assert!(error.contains("did you mean drain?"), "{error}");
        let error = script.eval("sleep(true)").expect_err("not a duration");
        assert!(
            error.contains("sleep(int)") && error.contains("sleep(string)"),
            "the accepted calls are named: {error}"
        );
        let signatures = signatures(&script.engine, "scale");
        assert_eq!(signatures, vec!["Service.scale(int)".to_string()]);
    }

    #[test]
    fn a_misspelt_filter_value_is_refused_with_a_suggestion() {
        let mut script = online();
        let error = script
            .eval(r#"tasks(#{state: "runing"}).len()"#)
            .expect_err("no such state");
        assert!(error.contains("did you mean running?"), "{error}");
        let error = crate::cli::parse_task_filter("desired-state=runing").expect_err("typo");
        assert!(error.contains("did you mean running?"), "{error}");
        let error = crate::cli::parse_task_filter("desired_state=running").expect_err("typo");
        assert!(error.contains("did you mean desired-state?"), "{error}");
    }

    #[test]
    fn advice_in_a_script_names_the_functions() {
        let error = objects::from_anyhow(anyhow::anyhow!(
            "web: task failed; fix it and go on with 'essaim service update --continue web', or \
             'essaim service rollback web'"
        ));
        let text = error.to_string();
        assert!(
            text.contains("go on with continue_update(), or rollback()"),
            "{text}"
        );
        assert!(!text.contains("essaim service"), "{text}");
    }

    #[test]
    fn arguments_can_be_read_as_numbers_and_booleans() {
        let mut script = online();
        let mut args = rhai::Map::new();
        args.insert("min".into(), "3".into());
        args.insert("apply".into(), "yes".into());
        args.insert("ratio".into(), "0.5".into());
        script.set_args(args);
        let value = script
            .eval(r#"[arg_int("min") + 1, arg_int("max", 10), arg_bool("apply"), arg_bool("dry", false), arg_float("ratio"), arg("min"), args["min"]]"#)
            .expect("typed arguments");
        assert_eq!(value.to_string(), r#"[4, 10, true, false, 0.5, "3", "3"]"#);
        let error = script.eval(r#"arg_int("max")"#).expect_err("missing");
        assert!(error.contains("give --arg max=VALUE"), "{error}");
        let error = script
            .eval(r#"arg_bool("min")"#)
            .expect_err("not a boolean");
        assert!(error.contains("--arg min=3"), "{error}");
    }

    #[test]
    fn backtick_strings_keep_backslashes_as_the_docs_say() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/scripting.md");
        let docs = std::fs::read_to_string(path).expect("docs/scripting.md");
        assert!(docs.contains("do not expand escapes"), "the docs say it");
        let value = script().eval(r#"`a\tb`.len()"#).expect("a backtick string");
        assert_eq!(value.as_int(), Ok(4), "the backslash and t stay");
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
        assert!(
            error.contains("limit of 10000") && error.contains("--max-operations"),
            "the limit and the flag are named: {error}"
        );
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
