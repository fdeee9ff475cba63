//! Every answer the tests receive through [`super::Service::call`] is checked against the
//! API's OpenAPI document: the operation's schema for that status (or its `default`), and
//! `Result` for answers outside any operation (an unknown path, a wrong method).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

const DOC: &str = include_str!("../../src/api/openapi.json");

fn doc() -> &'static serde_json::Value {
    static DOC_VALUE: OnceLock<serde_json::Value> = OnceLock::new();
    DOC_VALUE.get_or_init(|| serde_json::from_str(DOC).expect("openapi.json parses"))
}

/// The document's path template that `path` (no query) falls under.
fn template_of(path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.split('/').collect();
    doc()["paths"]
        .as_object()?
        .keys()
        .find(|t| {
            let tp: Vec<&str> = t.split('/').collect();
            tp.len() == parts.len()
                && tp.iter().zip(&parts).all(|(a, b)| {
                    (a.starts_with('{') && a.ends_with('}') && !b.is_empty()) || a == b
                })
        })
        .map(String::as_str)
}

/// The schema an answer must satisfy, as a pointer into the document.
fn schema_pointer(method: &str, path: &str, status: u16) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let result = "/components/schemas/Result".to_string();
    let Some(t) = template_of(path) else {
        return result;
    };
    let m = method.to_ascii_lowercase();
    let responses = &doc()["paths"][t][&m]["responses"];
    if !responses.is_object() {
        return result;
    }
    let key = if responses[status.to_string()].is_object() {
        status.to_string()
    } else if responses["default"].is_object() {
        "default".to_string()
    } else {
        panic!("{method} {path} answered {status}, which the OpenAPI document does not list");
    };
    let escaped = t.replace('~', "~0").replace('/', "~1");
    format!("/paths/{escaped}/{m}/responses/{key}/content/application~1json/schema")
}

/// Panics unless `body` (the answer to `method path` with `status`) fits the document.
pub fn check_answer(method: &str, path: &str, status: u16, body: &serde_json::Value) {
    static VALIDATORS: OnceLock<Mutex<HashMap<String, jsonschema::Validator>>> = OnceLock::new();
    let pointer = schema_pointer(method, path, status);
    if doc().pointer(&pointer).is_none() {
        // Not a JSON answer in the document (e.g. the metrics text).
        return;
    }
    let mut cache = VALIDATORS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let validator = cache.entry(pointer.clone()).or_insert_with(|| {
        // The document as the root, so `#/components/…` references resolve.
        let mut schema = doc().clone();
        let target = doc().pointer(&pointer).cloned().unwrap_or_default();
        if let (Some(root), Some(t)) = (schema.as_object_mut(), target.as_object()) {
            root.remove("openapi");
            root.remove("paths");
            for (k, v) in t {
                root.insert(k.clone(), v.clone());
            }
        }
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap_or_else(|e| panic!("schema at {pointer}: {e}"))
    });
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} answered {status} outside the OpenAPI document ({pointer}): {errors:?}\n{body}"
    );
}
