//! Conversions between Rhai values and the rest: string maps, JSON, short descriptions.

use std::collections::BTreeMap;

use rhai::{Dynamic, Map};

pub fn string_map(map: &BTreeMap<String, String>) -> Map {
    map.iter()
        .map(|(key, value)| (key.as_str().into(), value.clone().into()))
        .collect()
}

/// `image=app:2, replicas=3`: a map of changes, for the list of what a script changed.
pub fn describe_map(map: &Map) -> String {
    map.iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Rhai value as JSON (objects become their table rows).
///
/// # Errors
/// A value JSON cannot hold (a function pointer, say).
pub fn to_json(value: &Dynamic) -> Result<serde_json::Value, String> {
    let value = super::plain(value);
    rhai::serde::from_dynamic::<serde_json::Value>(&value).map_err(|e| e.to_string())
}

/// JSON text as a Rhai value: objects as maps, arrays as arrays.
///
/// # Errors
/// Text that is not JSON, with where it went wrong.
pub fn from_json(text: &str) -> Result<Dynamic, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("parse_json: {e}"))?;
    rhai::serde::to_dynamic(value).map_err(|e| e.to_string())
}
