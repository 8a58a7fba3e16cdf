//! Reading admin request bodies: a size cap, JSON parsing, and field-by-field validation that
//! reports every problem as `{"field", "message"}` in one `400 invalid_request` (missing fields,
//! wrong types, unknown fields, out-of-range values) instead of stopping at the first.

use crate::error::{ApiError, FieldError};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};

/// Reads a body of at most `max` bytes (`[server] admin_max_body_bytes`) as a JSON object.
pub async fn read_object<B>(body: B, max: usize) -> Result<Map<String, Value>, ApiError>
where
    B: http_body::Body + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = match Limited::new(body, max).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return Err(ApiError::field("body", format!("must be a JSON object of at most {max} bytes"))),
    };
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::field("body", "must be a JSON object")),
        Err(e) => Err(ApiError::field("body", format!("malformed JSON at line {} column {}", e.line(), e.column()))),
    }
}

/// Field-level validation of one JSON object.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// Starts validating `obj`, refusing any key not in `allowed`.
    pub fn new(obj: &'a Map<String, Value>, allowed: &[&str]) -> Fields<'a> {
        Fields::nested(obj, "", allowed)
    }

    fn nested(obj: &'a Map<String, Value>, prefix: &str, allowed: &[&str]) -> Fields<'a> {
        let mut f = Fields { obj, prefix: prefix.to_owned(), errors: Vec::new() };
        for k in obj.keys() {
            if !allowed.contains(&k.as_str()) {
                f.error(k, "unknown field");
            }
        }
        f
    }

    pub fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError { field: format!("{}{field}", self.prefix), message: message.into() });
    }

    fn present(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    pub fn has(&self, name: &str) -> bool {
        self.present(name).is_some()
    }

    pub fn opt_str(&mut self, name: &str, max_len: usize) -> Option<String> {
        match self.present(name)? {
            Value::String(s) if s.trim().is_empty() => {
                self.error(name, "must not be empty");
                None
            }
            Value::String(s) if s.chars().count() > max_len => {
                self.error(name, format!("must be at most {max_len} characters"));
                None
            }
            Value::String(s) if s.chars().any(char::is_control) => {
                self.error(name, "must not contain control characters");
                None
            }
            Value::String(s) => Some(s.clone()),
            _ => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    pub fn req_str(&mut self, name: &str, max_len: usize) -> Option<String> {
        if !self.has(name) {
            self.error(name, "is required");
            return None;
        }
        self.opt_str(name, max_len)
    }

    pub fn opt_u64(&mut self, name: &str, min: u64, max: u64) -> Option<u64> {
        match self.present(name)? {
            Value::Number(n) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => Some(v),
                _ => {
                    self.error(name, format!("must be a whole number from {min} to {max}"));
                    None
                }
            },
            _ => {
                self.error(name, "must be a number");
                None
            }
        }
    }

    pub fn req_u64(&mut self, name: &str, min: u64, max: u64) -> Option<u64> {
        if !self.has(name) {
            self.error(name, "is required");
            return None;
        }
        self.opt_u64(name, min, max)
    }

    pub fn opt_bool(&mut self, name: &str) -> Option<bool> {
        match self.present(name)? {
            Value::Bool(b) => Some(*b),
            _ => {
                self.error(name, "must be true or false");
                None
            }
        }
    }

    pub fn req_bool(&mut self, name: &str) -> Option<bool> {
        if !self.has(name) {
            self.error(name, "is required");
            return None;
        }
        self.opt_bool(name)
    }

    /// One of `choices`.
    pub fn req_enum(&mut self, name: &str, choices: &[&'static str]) -> Option<&'static str> {
        let s = self.req_str(name, 64)?;
        let found = choices.iter().copied().find(|c| *c == s);
        if found.is_none() {
            self.error(name, format!("must be one of {}", choices.join(", ")));
        }
        found
    }

    /// An RFC 3339 time.
    pub fn opt_time(&mut self, name: &str) -> Option<DateTime<Utc>> {
        let s = self.opt_str(name, 64)?;
        match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.error(name, "must be an RFC 3339 time such as 2026-11-21T08:30:00Z");
                None
            }
        }
    }

    /// An array of non-empty strings.
    pub fn str_array(&mut self, name: &str, required: bool, max_items: usize, max_len: usize) -> Option<Vec<String>> {
        let Some(v) = self.present(name) else {
            if required {
                self.error(name, "is required");
            }
            return None;
        };
        let Some(items) = v.as_array() else {
            self.error(name, "must be an array of strings");
            return None;
        };
        if items.len() > max_items {
            self.error(name, format!("must have at most {max_items} items"));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) if !s.trim().is_empty() && s.len() <= max_len && !s.chars().any(char::is_control) => {
                    out.push(s.to_owned())
                }
                _ => self.error(
                    &format!("{name}[{i}]"),
                    format!("must be a non-empty string of at most {max_len} characters"),
                ),
            }
        }
        Some(out)
    }

    /// An array of objects, each validated by `each` (with field names like `items[0].quantity`).
    pub fn objects<T>(
        &mut self,
        name: &str,
        max_items: usize,
        allowed: &[&str],
        mut each: impl FnMut(&mut Fields<'a>) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Some(v) = self.present(name) else {
            self.error(name, "is required");
            return None;
        };
        let Some(items) = v.as_array().filter(|a| !a.is_empty() && a.len() <= max_items) else {
            self.error(name, format!("must be an array of 1 to {max_items} objects"));
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let Some(obj) = item.as_object() else {
                self.error(&format!("{name}[{i}]"), "must be an object");
                continue;
            };
            let mut f = Fields::nested(obj, &format!("{}{name}[{i}].", self.prefix), allowed);
            let r = each(&mut f);
            self.errors.append(&mut f.errors);
            out.extend(r);
        }
        Some(out)
    }

    /// A nested object validated by `inner` (field names like `contact.email`).
    pub fn object<T>(
        &mut self,
        name: &str,
        allowed: &[&str],
        inner: impl FnOnce(&mut Fields<'a>) -> Option<T>,
    ) -> Option<T> {
        let Some(v) = self.present(name) else {
            self.error(name, "is required");
            return None;
        };
        let Some(obj) = v.as_object() else {
            self.error(name, "must be an object");
            return None;
        };
        let mut f = Fields::nested(obj, &format!("{}{name}.", self.prefix), allowed);
        let r = inner(&mut f);
        self.errors.append(&mut f.errors);
        r
    }

    /// `Ok` if nothing was wrong, else one `400` listing every problem.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidRequest { errors: self.errors })
        }
    }
}

/// Unwraps a value validated by [`Fields`] after a successful [`Fields::finish`].
pub fn got<T>(v: Option<T>) -> T {
    v.expect("validated: finish() returned Ok, so the value is present")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let o = obj(serde_json::json!({"name": 5, "extra": true, "items": [{"quantity": "x"}]}));
        let mut f = Fields::new(&o, &["name", "items", "kind"]);
        f.req_str("name", 10);
        f.req_enum("kind", &["a", "b"]);
        f.objects("items", 10, &["product_id", "quantity"], |i| {
            i.req_str("product_id", 10);
            i.req_u64("quantity", 1, 10)
        });
        let Err(ApiError::InvalidRequest { errors }) = f.finish() else { panic!() };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["extra", "name", "kind", "items[0].product_id", "items[0].quantity"]);
    }
}
