//! The objects under the prefix, and the native document they make.
//!
//! Each object is checked on its own when it is read (JSON, its `id` matches its key, an
//! instance with an `interface` names its `node`), once per change; the document is then the
//! objects side by side, validated exactly like a file. Problems come back with their paths
//! rewritten to keys: `instances[3].security_groups[0]` becomes
//! `/sg/v1/instances/web-1: security_groups[0]`.

use std::collections::BTreeMap;

use super::layout::{KeyRole, Kind, Layout};
use crate::policy::{
    Invalid, Problem,
    json::{Json, Problems, field},
    native,
};

/// One object as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The value as stored (one JSON object).
    pub text: String,
    /// The store revision that last wrote it (0 for objects not read from the store).
    pub mod_revision: i64,
    /// What is wrong with it on its own (empty for a usable object).
    problems: Vec<String>,
}

/// The objects of one store revision (or of a document about to be written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Content {
    objects: BTreeMap<(Kind, String), Object>,
    /// Keys under the prefix that are neither objects, agents' records nor the writers' guard.
    unknown: BTreeMap<String, i64>,
}

/// Whether a store event changed the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// An object (or an unknown key) was added, changed or removed.
    Changed,
    /// An object was written with the value it had.
    Rewritten,
    /// Not content: an agent's record or the writers' guard.
    Ignored,
}

/// The document text of a [`Content`], and how to name its problems by key.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub text: String,
    pub names: Names,
}

/// The key behind each entry of each section of an assembled document.
#[derive(Debug, Clone, Default)]
pub struct Names {
    keys: BTreeMap<Kind, Vec<String>>,
}

impl Content {
    /// Objects, in key order within each kind.
    pub fn objects(&self) -> impl Iterator<Item = (Kind, &str, &Object)> {
        self.objects.iter().map(|((kind, id), o)| (*kind, id.as_str(), o))
    }

    pub fn get(&self, kind: Kind, id: &str) -> Option<&Object> {
        self.objects.get(&(kind, id.to_owned()))
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.unknown.is_empty()
    }

    /// Counts by kind, for messages.
    pub fn count(&self, kind: Kind) -> usize {
        self.objects.keys().filter(|(k, _)| *k == kind).count()
    }

    /// A fingerprint of the objects (FNV-1a over each key and value in key order): equal
    /// fingerprints mean the same objects with the same values. Agents report the one of the
    /// objects they enforce, so that convergence can be checked exactly.
    pub fn digest(&self, layout: &Layout) -> String {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut feed = |bytes: &[u8]| {
            for b in bytes.iter().chain(std::iter::once(&0u8)) {
                hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        };
        for ((kind, id), object) in &self.objects {
            feed(layout.object_key(*kind, id).as_bytes());
            feed(object.text.as_bytes());
        }
        format!("{hash:016x}")
    }

    /// Whether the two hold the same objects with the same values (revisions aside).
    pub fn same_values(&self, other: &Content) -> bool {
        self.unknown.keys().eq(other.unknown.keys())
            && self.objects.len() == other.objects.len()
            && self.objects.iter().zip(&other.objects).all(|((a, x), (b, y))| a == b && x.text == y.text)
    }

    /// A key and its value, as read from the store.
    pub fn put_key(&mut self, layout: &Layout, key: &str, value: &[u8], mod_revision: i64) -> Effect {
        match layout.role(key) {
            KeyRole::Node(_) | KeyRole::Writer => Effect::Ignored,
            KeyRole::Unknown => {
                let known = self.unknown.insert(key.to_owned(), mod_revision).is_some();
                if known { Effect::Rewritten } else { Effect::Changed }
            }
            KeyRole::Object(kind, id) => {
                let (text, problems) = match std::str::from_utf8(value) {
                    Ok(text) => (text.to_owned(), check_object(kind, id, text)),
                    Err(e) => (
                        String::from_utf8_lossy(value).into_owned(),
                        vec![format!("not UTF-8 text (invalid byte at offset {})", e.valid_up_to())],
                    ),
                };
                let key = (kind, id.to_owned());
                let same = self.objects.get(&key).is_some_and(|old| old.text == text);
                self.objects.insert(key, Object { text, mod_revision, problems });
                if same { Effect::Rewritten } else { Effect::Changed }
            }
        }
    }

    /// A key deleted from the store.
    pub fn delete_key(&mut self, layout: &Layout, key: &str) -> Effect {
        let removed = match layout.role(key) {
            KeyRole::Node(_) | KeyRole::Writer => return Effect::Ignored,
            KeyRole::Unknown => self.unknown.remove(key).is_some(),
            KeyRole::Object(kind, id) => self.objects.remove(&(kind, id.to_owned())).is_some(),
        };
        if removed { Effect::Changed } else { Effect::Rewritten }
    }

    /// Keys under the prefix that are not objects (see [`Content::assemble`]).
    pub fn unknown_keys(&self) -> impl Iterator<Item = &str> {
        self.unknown.keys().map(String::as_str)
    }

    /// The objects only.
    pub fn without_unknown(&self) -> Content {
        Content { objects: self.objects.clone(), unknown: BTreeMap::new() }
    }

    /// Takes over `other`'s unknown keys.
    pub fn keep_unknown(&mut self, other: &Content) {
        self.unknown.extend(other.unknown.iter().map(|(k, r)| (k.clone(), *r)));
    }

    /// An object about to be written (not from the store).
    pub fn put(&mut self, kind: Kind, id: &str, text: String) {
        let problems = check_object(kind, id, &text);
        self.objects.insert((kind, id.to_owned()), Object { text, mod_revision: 0, problems });
    }

    pub fn remove(&mut self, kind: Kind, id: &str) -> Option<Object> {
        self.objects.remove(&(kind, id.to_owned()))
    }

    /// The objects of a native document's text, each in compact JSON, as `fleet apply` writes
    /// them. Only the document's shape is checked here (sections, ids, duplicates); the objects
    /// are validated with the store's content they join.
    pub fn of_document(text: &str) -> Result<Content, Invalid> {
        let json = native::parse_json(text)?;
        let mut content = Content::default();
        let mut p = Problems::default();
        let mut sections: Vec<&str> = Kind::DOCUMENT.iter().map(|k| k.section()).collect();
        sections.push("node_services");
        let Some(top) = p.object("", &json, &sections) else { return Err(Invalid { problems: p.list }) };
        for (section, items) in top {
            if section == "node_services" {
                // A document-wide setting, not an object: the store has no key for it yet, and
                // dropping it silently would change what every node lets through.
                p.add(section, "not kept in the store yet: agents in fleet mode use EC2's service addresses");
                continue;
            }
            let Some(kind) = Kind::of_section(section) else { continue };
            let Some(items) = p.array(section, items, usize::MAX) else { continue };
            for (i, item) in items.iter().enumerate() {
                let path = format!("{section}[{i}]");
                let id = match object_fields(item).map(|f| field(f, "id")) {
                    None => {
                        p.add(&path, format!("expected an object, found {}", item.kind()));
                        continue;
                    }
                    Some(Some(Json::String(id))) if !id.is_empty() => id,
                    Some(_) => {
                        p.add(&format!("{path}.id"), "missing (every object needs a string id: its key in the store)");
                        continue;
                    }
                };
                if content.get(kind, id).is_some() {
                    p.add(&format!("{path}.id"), format!("duplicate {kind} id {id:?}"));
                    continue;
                }
                let mut text = String::new();
                write_json(&mut text, item);
                content.put(kind, id, text);
            }
        }
        if p.is_empty() { Ok(content) } else { Err(Invalid { problems: p.list }) }
    }

    /// The native document these objects make. Problems of single objects (and unknown keys)
    /// are reported here, named by key; the document itself still has to pass validation.
    pub fn assemble(&self, layout: &Layout) -> Result<Assembled, Invalid> {
        let mut problems: Vec<Problem> = self
            .unknown
            .keys()
            .map(|key| {
                Problem::new(
                    key.clone(),
                    format!(
                        "not an object key (objects are under {}groups/, prefix_lists/ and instances/)",
                        layout.root()
                    ),
                )
            })
            .collect();
        for ((kind, id), object) in &self.objects {
            for message in &object.problems {
                problems.push(Problem::new(layout.object_key(*kind, id), message.clone()));
            }
        }
        if !problems.is_empty() {
            return Err(Invalid { problems });
        }
        let bytes: usize = self.objects.values().map(|o| o.text.len() + 1).sum();
        let mut text = String::with_capacity(bytes + 64);
        let mut names = Names::default();
        text.push('{');
        for (n, kind) in Kind::DOCUMENT.into_iter().enumerate() {
            if n > 0 {
                text.push(',');
            }
            text.push('"');
            text.push_str(kind.section());
            text.push_str("\":[");
            let keys = names.keys.entry(kind).or_default();
            for (i, ((_, id), object)) in
                self.objects.range((kind, String::new())..).take_while(|((k, _), _)| *k == kind).enumerate()
            {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&object.text);
                keys.push(layout.object_key(kind, id));
            }
            text.push(']');
        }
        text.push('}');
        Ok(Assembled { text, names })
    }

    /// Assembles and validates (read, validate, compile) as `check` does a file.
    pub fn validate(&self, layout: &Layout) -> Result<Assembled, Invalid> {
        let assembled = self.assemble(layout)?;
        crate::compile::prepare(&assembled.text, None).map_err(|invalid| assembled.names.rename(invalid))?;
        Ok(assembled)
    }
}

fn object_fields(value: &Json) -> Option<&[(String, Json)]> {
    match value {
        Json::Object(fields) => Some(fields),
        _ => None,
    }
}

/// What is wrong with one stored object on its own: not a JSON object, an `id` other than its
/// key's, an instance with an interface but no node. Everything else is the document
/// validation's job (with the key in its paths).
fn check_object(kind: Kind, id: &str, text: &str) -> Vec<String> {
    let json = match native::parse_json(text) {
        Ok(json) => json,
        Err(invalid) => return invalid.problems.into_iter().map(|p| p.message).collect(),
    };
    let Some(fields) = object_fields(&json) else {
        return vec![format!("expected a {kind} (a JSON object), found {}", json.kind())];
    };
    let mut problems = Vec::new();
    match field(fields, "id") {
        Some(Json::String(s)) if s == id => {}
        Some(Json::String(s)) => problems.push(format!("id {s:?} does not match the key (whose last part is {id:?})")),
        Some(other) => problems.push(format!("id: expected a string, found {}", other.kind())),
        None => problems.push(format!("missing \"id\" (it must repeat the key's last part, {id:?})")),
    }
    if kind == Kind::Instance && field(fields, "interface").is_some() && field(fields, "node").is_none() {
        problems.push(
            "an instance with an interface must name its node (\"node\"): otherwise every agent would enforce it"
                .to_owned(),
        );
    }
    problems
}

impl Names {
    /// The key of entry `index` of `section`, if there is one.
    fn key(&self, section: &str, index: usize) -> Option<&str> {
        self.keys.get(&Kind::of_section(section)?)?.get(index).map(String::as_str)
    }

    /// Rewrites document paths (`instances[3].security_groups[0]`) to keys
    /// (`<prefix>/instances/web-1: security_groups[0]`), in paths and in messages that name
    /// another entry ("already belongs to instances[2]").
    pub fn rename(&self, invalid: Invalid) -> Invalid {
        let problems = invalid
            .problems
            .into_iter()
            .map(|p| {
                let path = match self.entry_at(&p.path, 0) {
                    Some((key, end)) => match p.path.get(end..).map(|rest| rest.trim_start_matches('.')) {
                        Some(rest) if !rest.is_empty() => format!("{key}: {rest}"),
                        _ => key.to_owned(),
                    },
                    None => p.path,
                };
                Problem { path, message: self.rename_text(&p.message), source: p.source }
            })
            .collect();
        Invalid { problems }
    }

    /// `section[N]` starting at byte `at` of `text`: its key and where it ends.
    fn entry_at(&self, text: &str, at: usize) -> Option<(&str, usize)> {
        let rest = text.get(at..)?;
        let open = rest.find('[')?;
        let section = rest.get(..open)?;
        let close = rest.get(open..)?.find(']')? + open;
        let index: usize = rest.get(open + 1..close)?.parse().ok()?;
        Some((self.key(section, index)?, at + close + 1))
    }

    /// Messages name other entries as `instances[2]` after a space or parenthesis.
    fn rename_text(&self, message: &str) -> String {
        let mut out = String::with_capacity(message.len());
        let mut at = 0;
        while at < message.len() {
            let starts_word = at == 0 || message.get(..at).is_some_and(|b| b.ends_with([' ', '(']));
            if starts_word {
                let section = Kind::ALL.into_iter().map(Kind::section).find(|s| {
                    message
                        .get(at..)
                        .is_some_and(|r| r.starts_with(s) && r.get(s.len()..).is_some_and(|t| t.starts_with('[')))
                });
                if section.is_some()
                    && let Some((key, end)) = self.entry_at(message, at)
                {
                    out.push_str(key);
                    at = end;
                    continue;
                }
            }
            let Some(c) = message.get(at..).and_then(|r| r.chars().next()) else { break };
            out.push(c);
            at += c.len_utf8();
        }
        out
    }
}

/// Compact JSON text of a value, keys in their order.
pub fn write_json(out: &mut String, value: &Json) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => out.push_str(&n.to_string()),
        Json::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Json::Object(fields) => {
            out.push('{');
            for (i, (key, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(key).unwrap_or_default());
                out.push(':');
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

/// Pretty JSON text of a value, keys in their order (for `fleet export`).
pub fn pretty_json(value: &Json) -> String {
    let mut compact = String::new();
    write_json(&mut compact, value);
    // serde_json's pretty printer, with key order kept: through a Value built with the same order
    // is not possible without `preserve_order`, so indent the compact text instead.
    indent(&compact)
}

/// Indents compact JSON text (two spaces), leaving strings untouched.
fn indent(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = compact.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                if matches!(chars.peek(), Some('}' | ']')) {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test code")]

    use super::*;

    fn layout() -> Layout {
        Layout::new("/sg/v1")
    }

    fn content(kvs: &[(&str, &str)]) -> Content {
        let mut c = Content::default();
        for (i, (k, v)) in kvs.iter().enumerate() {
            c.put_key(&layout(), k, v.as_bytes(), i as i64 + 2);
        }
        c
    }

    #[test]
    fn a_valid_store_makes_one_document() {
        let c = content(&[
            (
                "/sg/v1/groups/sg-db",
                r#"{"id":"sg-db","ingress":[{"protocol":"tcp","from_port":5432,"to_port":5432,"groups":["sg-app"]}]}"#,
            ),
            ("/sg/v1/groups/sg-app", r#"{"id":"sg-app"}"#),
            (
                "/sg/v1/instances/db",
                r#"{"id":"db","node":"n1","interface":"veth-db","addresses":["10.0.1.10"],"security_groups":["sg-db"]}"#,
            ),
            (
                "/sg/v1/instances/app",
                r#"{"id":"app","node":"n2","interface":"veth-app","addresses":["10.0.2.10"],"security_groups":["sg-app"]}"#,
            ),
            ("/sg/v1/nodes/n1/state", "not json, not content"),
            ("/sg/v1/writer", "{}"),
        ]);
        let assembled = c.validate(&layout()).unwrap();
        let doc = crate::policy::native::parse_document(&assembled.text).unwrap();
        assert_eq!(doc.instances.len(), 2);
        assert_eq!(doc.security_groups.len(), 3, "sg-app, sg-db and the built-in default");
        let n1 = doc.clone().for_node("n1");
        assert_eq!(n1.local_instances().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["db"]);
        let n3 = doc.for_node("n3");
        assert_eq!(n3.local_instances().count(), 0, "a node with no instances enforces none");
    }

    #[test]
    fn problems_are_named_by_key() {
        let c = content(&[
            (
                "/sg/v1/groups/sg-a",
                r#"{"id":"sg-a","ingress":[{"protocol":"tcp","from_port":1,"to_port":70000,"cidrs":["0.0.0.0/0"]}]}"#,
            ),
            ("/sg/v1/instances/a", r#"{"id":"a","addresses":["10.0.0.1"],"security_groups":["sg-missing"]}"#),
            ("/sg/v1/instances/b", r#"{"id":"b","addresses":["10.0.0.1"]}"#),
        ]);
        let invalid = c.validate(&layout()).unwrap_err();
        let lines: Vec<String> = invalid.problems.iter().map(ToString::to_string).collect();
        assert!(
            lines.contains(&"/sg/v1/groups/sg-a: ingress[0].to_port: 70000 is not a port (0-65535)".to_owned()),
            "{lines:#?}"
        );
        assert!(
            lines
                .contains(&r#"/sg/v1/instances/a: security_groups[0]: unknown security group "sg-missing""#.to_owned()),
            "{lines:#?}"
        );
        assert!(
            lines.contains(
                &"/sg/v1/instances/b: addresses[0]: 10.0.0.1 already belongs to /sg/v1/instances/a".to_owned()
            ),
            "{lines:#?}"
        );
    }

    #[test]
    fn objects_are_checked_on_their_own() {
        let c = content(&[
            ("/sg/v1/groups/sg-a", r#"{"id":"sg-b"}"#),
            ("/sg/v1/groups/sg-c", "{not json"),
            ("/sg/v1/groups/sg-d", "[1]"),
            ("/sg/v1/instances/x", r#"{"id":"x","interface":"eth0","addresses":["10.0.0.1"]}"#),
            ("/sg/v1/subnets/s-1", "{}"),
        ]);
        let invalid = c.assemble(&layout()).unwrap_err();
        let lines: Vec<String> = invalid.problems.iter().map(ToString::to_string).collect();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].starts_with("/sg/v1/subnets/s-1: not an object key"), "{lines:#?}");
        assert!(lines.iter().any(|l| l.starts_with("/sg/v1/groups/sg-a: id \"sg-b\" does not match the key")));
        assert!(lines.iter().any(|l| l.starts_with("/sg/v1/groups/sg-c: not valid JSON")));
        assert!(lines.iter().any(|l| l.starts_with("/sg/v1/groups/sg-d: expected a security group (a JSON object)")));
        assert!(
            lines.iter().any(|l| l.starts_with("/sg/v1/instances/x: an instance with an interface must name its node"))
        );
    }

    #[test]
    fn effects_of_events() {
        let l = layout();
        let mut c = Content::default();
        assert_eq!(c.put_key(&l, "/sg/v1/groups/a", br#"{"id":"a"}"#, 2), Effect::Changed);
        assert_eq!(c.put_key(&l, "/sg/v1/groups/a", br#"{"id":"a"}"#, 3), Effect::Rewritten);
        assert_eq!(c.get(Kind::Group, "a").unwrap().mod_revision, 3);
        assert_eq!(c.put_key(&l, "/sg/v1/nodes/n1/state", b"{}", 4), Effect::Ignored);
        assert_eq!(c.delete_key(&l, "/sg/v1/groups/a"), Effect::Changed);
        assert_eq!(c.delete_key(&l, "/sg/v1/groups/a"), Effect::Rewritten);
        assert!(c.is_empty());
    }

    #[test]
    fn a_document_splits_into_objects_and_back() {
        let text = r#"{ "security_groups": [ { "id": "sg-a", "ingress": [ { "protocol": "tcp", "cidrs": ["10.0.0.0/8"] } ] } ],
                        "instances": [ { "id": "i \"1\"", "node": "n1", "interface": "eth0", "addresses": ["10.0.0.1"], "security_groups": ["sg-a"] } ] }"#;
        let c = Content::of_document(text).unwrap();
        assert_eq!(c.count(Kind::Group), 1);
        assert_eq!(
            c.get(Kind::Instance, "i \"1\"").unwrap().text,
            r#"{"id":"i \"1\"","node":"n1","interface":"eth0","addresses":["10.0.0.1"],"security_groups":["sg-a"]}"#
        );
        let assembled = c.validate(&layout()).unwrap();
        let again = Content::of_document(&assembled.text).unwrap();
        assert!(again.same_values(&c));
        let pretty = pretty_json(&Json::parse(&assembled.text).unwrap());
        assert!(Content::of_document(&pretty).unwrap().same_values(&c), "{pretty}");
        assert!(pretty.contains("\"id\": \"i \\\"1\\\"\""), "{pretty}");
    }
}
