//! Reading admin request bodies: a size cap and a deadline, strict JSON parsing (a key given
//! twice is refused, naming it), and field-by-field validation that reports every problem as
//! `{"field", "message"}` in one `400 invalid_request` (missing fields, wrong types, unknown
//! fields, out-of-range values) instead of stopping at the first.

use crate::error::{ApiError, FieldError};
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};
use std::time::Duration;

/// Reads a whole body of at most `max` bytes within `deadline` (`[server] body_read_timeout_secs`):
/// a body that drips in slower is `408` (and its connection is closed), so no caller — the
/// unauthenticated revocation push included — can hold a connection with an unfinished body.
pub async fn read_bytes<B>(body: B, max: usize, deadline: Duration, what: &str) -> Result<bytes::Bytes, ApiError>
where
    B: http_body::Body + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(deadline, Limited::new(body, max).collect()).await {
        Err(_) => Err(ApiError::RequestTimeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(_)) => Err(ApiError::field("body", format!("must be {what} of at most {max} bytes"))),
    }
}

/// Reads a body of at most `max` bytes (`[server] admin_max_body_bytes`) as a JSON object.
pub async fn read_object<B>(body: B, max: usize, deadline: Duration) -> Result<Map<String, Value>, ApiError>
where
    B: http_body::Body + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bytes = read_bytes(body, max, deadline, "a JSON object").await?;
    if bytes.is_empty() {
        return Ok(Map::new());
    }
    match parse_strict(&bytes)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::field("body", "must be a JSON object")),
    }
}

/// Parses JSON like `serde_json::from_slice::<Value>`, except that an object with the same key
/// twice is refused with `400` naming it (`contact.email`, `items[1].quantity`): serde_json keeps
/// the last value silently, and two readers of one body must never see two different requests.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, ApiError> {
    use serde::de::DeserializeSeed;
    let duplicate = std::cell::RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict { path: String::new(), duplicate: &duplicate }.deserialize(&mut de).and_then(|v| {
        de.end()?;
        Ok(v)
    });
    match (parsed, duplicate.into_inner()) {
        (_, Some(field)) => Err(ApiError::field(&field, "is given more than once")),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => {
            Err(ApiError::field("body", format!("malformed JSON at line {} column {}", e.line(), e.column())))
        }
    }
}

/// A JSON value visitor that remembers where it is, to name a duplicate key.
struct Strict<'d> {
    path: String,
    duplicate: &'d std::cell::RefCell<Option<String>>,
}

impl Strict<'_> {
    fn child(&self, path: String) -> Strict<'_> {
        Strict { path, duplicate: self.duplicate }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child(format!("{}[{}]", self.path, out.len())))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if out.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(path);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            let v = map.next_value_seed(self.child(path))?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
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

    fn refused_field(body: &str) -> String {
        match parse_strict(body.as_bytes()) {
            Err(ApiError::InvalidRequest { errors }) => errors[0].field.clone(),
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_key_given_twice_is_refused_naming_it_at_any_depth() {
        assert_eq!(refused_field(r#"{"name":"a","name":"b"}"#), "name");
        assert_eq!(refused_field(r#"{"contact":{"email":"a","email":"b"}}"#), "contact.email");
        assert_eq!(refused_field(r#"{"items":[{"quantity":1},{"quantity":1,"quantity":2}]}"#), "items[1].quantity");
        assert_eq!(refused_field(r#"{"a":1} x"#), "body", "trailing garbage is malformed");
        let v = parse_strict(r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":{"a":1}}"#.as_bytes()).unwrap();
        assert_eq!(v, serde_json::json!({"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":{"a":1}}));
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
