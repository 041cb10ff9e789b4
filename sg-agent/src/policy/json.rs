//! A JSON tree that keeps what `serde_json::Value` throws away: duplicate keys (an error in a
//! policy, never "last one wins") and key order (so errors come out in document order). Plus a
//! small reader that walks it with a JSON path and collects every error instead of stopping.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    /// Key/value pairs in document order, duplicates included.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// What the value is, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// Parses a document. serde_json bounds nesting (128 levels), so hostile depth is an error,
    /// not a stack overflow.
    pub fn parse(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v).map(Json::Number).ok_or_else(|| E::custom("a number that is not finite"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut pairs = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            pairs.push((k, v));
        }
        Ok(Json::Object(pairs))
    }
}

/// Which input file a problem is in: the policy document, or one of the `--instances` files
/// (by position), so that every message can name its file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    #[default]
    Document,
    Instances(usize),
}

/// One problem (or warning) in a document, at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    /// `security_groups[2].ingress[0].to_port`; empty for the document itself.
    pub path: String,
    pub message: String,
    #[serde(default)]
    pub source: Source,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem { path: path.into(), message: message.into(), source: Source::Document }
    }

    /// `file: path: message`, with the file this problem is in.
    pub fn in_files(&self, document: &std::path::Path, instances: &[std::path::PathBuf]) -> String {
        let file = match self.source {
            Source::Document => Some(document),
            Source::Instances(i) => instances.get(i).map(std::path::PathBuf::as_path),
        };
        match (file, self.path.is_empty()) {
            (Some(file), true) => format!("{}: {}", file.display(), self.message),
            (Some(file), false) => format!("{}: {}: {}", file.display(), self.path, self.message),
            (None, _) => self.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Without file names (the agent's answers): say that it is not the policy document.
        match self.source {
            Source::Document => {}
            Source::Instances(0) => f.write_str("(--instances) ")?,
            Source::Instances(i) => write!(f, "(--instances #{}) ", i + 1)?,
        }
        if self.path.is_empty() { write!(f, "{}", self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Collects problems (which make a document invalid) and warnings (which do not) while a
/// document is read.
#[derive(Debug, Default)]
pub struct Problems {
    pub list: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// The file being read: every problem added is marked with it.
    pub source: Source,
}

/// Errors reported beyond this many are summarised: a hostile document with a million bad
/// entries must not produce a million lines.
pub const MAX_REPORTED_PROBLEMS: usize = 1000;

impl Problems {
    pub fn add(&mut self, path: &(impl fmt::Display + ?Sized), message: impl Into<String>) {
        self.list.push(Problem { path: path.to_string(), message: message.into(), source: self.source });
    }

    /// A warning: reported, but the document stays valid.
    pub fn warn(&mut self, path: &(impl fmt::Display + ?Sized), message: impl Into<String>) {
        self.warnings.push(Problem { path: path.to_string(), message: message.into(), source: self.source });
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Reads `value` as an object whose keys must all be in `allowed`; reports unknown and
    /// duplicate keys. Returns the fields.
    pub fn object<'a>(
        &mut self,
        path: &(impl fmt::Display + ?Sized),
        value: &'a Json,
        allowed: &[&str],
    ) -> Option<&'a [(String, Json)]> {
        let Json::Object(pairs) = value else {
            self.add(path, format!("expected an object, found {}", value.kind()));
            return None;
        };
        for (i, (key, _)) in pairs.iter().enumerate() {
            if pairs.iter().take(i).any(|(k, _)| k == key) {
                self.add(&Key(path, key), "key appears more than once");
            } else if !allowed.contains(&key.as_str()) {
                self.add(&Key(path, key), format!("unknown key (expected one of: {})", allowed.join(", ")));
            }
        }
        Some(pairs)
    }

    /// Reads `value` as an array of at most `max` items.
    pub fn array<'a>(
        &mut self,
        path: &(impl fmt::Display + ?Sized),
        value: &'a Json,
        max: usize,
    ) -> Option<&'a [Json]> {
        match value {
            Json::Array(items) if items.len() > max => {
                self.add(path, format!("{} items, more than the limit of {max}", items.len()));
                None
            }
            Json::Array(items) => Some(items),
            other => {
                self.add(path, format!("expected an array, found {}", other.kind()));
                None
            }
        }
    }

    pub fn string<'a>(&mut self, path: &(impl fmt::Display + ?Sized), value: &'a Json) -> Option<&'a str> {
        match value {
            Json::String(s) => Some(s),
            other => {
                self.add(path, format!("expected a string, found {}", other.kind()));
                None
            }
        }
    }

    pub fn boolean(&mut self, path: &(impl fmt::Display + ?Sized), value: &Json) -> Option<bool> {
        match value {
            Json::Bool(b) => Some(*b),
            other => {
                self.add(path, format!("expected true or false, found {}", other.kind()));
                None
            }
        }
    }

    /// An integer in `min..=max`; `what` names the range in the message ("a port (0-65535)").
    pub fn integer(
        &mut self,
        path: &(impl fmt::Display + ?Sized),
        value: &Json,
        min: i64,
        max: i64,
        what: &str,
    ) -> Option<i64> {
        let n = match value {
            Json::Number(n) => n,
            other => {
                self.add(path, format!("expected {what}, found {}", other.kind()));
                return None;
            }
        };
        match n.as_i64() {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                self.add(path, format!("{n} is not {what}"));
                None
            }
        }
    }
}

/// `parent.key` (or `key` at the top), written out only when a problem is reported there:
/// a large document has hundreds of thousands of locations and (almost always) no problem.
pub struct Key<'a, P: ?Sized>(pub &'a P, pub &'a str);

impl<P: fmt::Display + ?Sized> fmt::Display for Key<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parent = self.0.to_string();
        if parent.is_empty() { f.write_str(self.1) } else { write!(f, "{parent}.{}", self.1) }
    }
}

/// `parent[i]`, written out only when a problem is reported there (see [`Key`]).
pub struct At<'a, P: ?Sized>(pub &'a P, pub usize);

impl<P: fmt::Display + ?Sized> fmt::Display for At<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.0, self.1)
    }
}

/// `path.key`, or `key` at the top.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// `path[i]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The value of `key` among `fields`, if present (the first, if duplicated: duplicates are
/// already reported).
pub fn field<'a>(fields: &'a [(String, Json)], key: &str) -> Option<&'a Json> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_kept_and_reported() {
        let j = Json::parse(r#"{"a": 1, "a": 2}"#).unwrap();
        let mut p = Problems::default();
        p.object("x", &j, &["a"]);
        assert_eq!(p.list, vec![Problem::new("x.a", "key appears more than once")]);
    }

    #[test]
    fn unknown_keys_are_reported_with_path() {
        let j = Json::parse(r#"{"a": 1, "b": 2}"#).unwrap();
        let mut p = Problems::default();
        p.object("top[3]", &j, &["a"]);
        assert_eq!(p.list.len(), 1);
        assert_eq!(p.list[0].path, "top[3].b");
        assert!(p.list[0].message.starts_with("unknown key"));
    }

    #[test]
    fn lazy_locations_read_like_joined_paths() {
        assert_eq!(Key("", "instances").to_string(), join("", "instances"));
        let instance = At(&Key("", "instances"), 3);
        assert_eq!(At(&Key(&instance, "addresses"), 1).to_string(), "instances[3].addresses[1]");
        assert_eq!(
            At(&Key(&instance, "addresses"), 1).to_string(),
            index(&join(&index("instances", 3), "addresses"), 1)
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(Json::parse(&text).is_err());
    }

    #[test]
    fn integers_out_of_range_name_the_range() {
        let mut p = Problems::default();
        assert_eq!(p.integer("to_port", &Json::Number(70000.into()), 0, 65535, "a port (0-65535)"), None);
        assert_eq!(p.list[0].to_string(), "to_port: 70000 is not a port (0-65535)");
    }
}
