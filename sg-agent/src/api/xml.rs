//! A small XML writer for EC2's responses: elements and escaped text, nothing else.

use std::fmt::{self, Write as _};

/// EC2's response namespace (API version 2016-11-15).
pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// An XML fragment being written.
#[derive(Debug, Default)]
pub struct Xml {
    text: String,
}

impl Xml {
    pub fn new() -> Xml {
        Xml::default()
    }

    pub fn open(&mut self, tag: &str) -> &mut Self {
        let _ = write!(self.text, "<{tag}>");
        self
    }

    pub fn close(&mut self, tag: &str) -> &mut Self {
        let _ = write!(self.text, "</{tag}>");
        self
    }

    /// `<tag>value</tag>`, the value escaped.
    pub fn leaf(&mut self, tag: &str, value: impl fmt::Display) -> &mut Self {
        let value = value.to_string();
        let _ = write!(self.text, "<{tag}>");
        escape_into(&mut self.text, &value);
        let _ = write!(self.text, "</{tag}>");
        self
    }

    /// `<tag>value</tag>` if there is a value.
    pub fn leaf_opt(&mut self, tag: &str, value: Option<impl fmt::Display>) -> &mut Self {
        if let Some(v) = value {
            self.leaf(tag, v);
        }
        self
    }

    /// `<tag><item>…</item>…</tag>`, each item written by `f` (EC2 names list members `item`).
    pub fn list<T>(
        &mut self,
        tag: &str,
        items: impl IntoIterator<Item = T>,
        mut f: impl FnMut(&mut Xml, T),
    ) -> &mut Self {
        self.open(tag);
        for item in items {
            self.open("item");
            f(self, item);
            self.close("item");
        }
        self.close(tag)
    }

    /// Appends another fragment.
    pub fn append(&mut self, other: &Xml) -> &mut Self {
        self.text.push_str(&other.text);
        self
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Escapes text for element content and attributes. Characters XML 1.0 cannot carry at all
/// (most control characters; a description in a document may hold them) become U+FFFD, so that
/// a response always parses.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// A whole response document: `<ActionResponse xmlns=…><requestId>…</requestId>body</…>`.
pub fn response(action: &str, request_id: &str, body: &Xml) -> String {
    let mut x = Xml::new();
    x.leaf("requestId", request_id).append(body);
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{NAMESPACE}\">{}</{action}Response>",
        x.as_str()
    )
}

/// EC2's error document.
pub fn error(code: &str, message: &str, request_id: &str) -> String {
    let mut x = Xml::new();
    x.open("Response").open("Errors").open("Error").leaf("Code", code).leaf("Message", message);
    x.close("Error").close("Errors").leaf("RequestID", request_id).close("Response");
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}", x.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_unrepresentable_characters_replaced() {
        let mut x = Xml::new();
        x.leaf("description", "a<b & \"c\" \u{1}");
        assert_eq!(x.as_str(), "<description>a&lt;b &amp; &quot;c&quot; \u{fffd}</description>");
    }

    #[test]
    fn lists_are_items() {
        let mut x = Xml::new();
        x.list("groupSet", ["a", "b"], |x, g| {
            x.leaf("groupId", g);
        });
        assert_eq!(
            x.as_str(),
            "<groupSet><item><groupId>a</groupId></item><item><groupId>b</groupId></item></groupSet>"
        );
    }

    #[test]
    fn errors_have_ec2s_shape() {
        assert_eq!(
            error("AuthFailure", "no", "r-1"),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>AuthFailure</Code>\
             <Message>no</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
        );
    }
}
