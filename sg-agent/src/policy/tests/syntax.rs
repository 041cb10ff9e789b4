//! JSON syntax.

#[allow(unused_imports, reason = "each file uses part of the shared imports")]
use super::*;

#[test]
fn invalid_json_syntax() {
    let found = problems(r#"{ "security_groups": [ { "id": "sg-a", } ] }"#);
    assert_problems(&found, &[("", "not valid JSON")]);
    assert!(found[0].message.contains("line 1 column"), "the syntax error is positioned: {found:?}");
}

#[test]
fn empty_text_is_not_a_document() {
    assert_rejected("", "", "not valid JSON: EOF while parsing");
}

#[test]
fn trailing_text_after_the_document() {
    assert_rejected("{} {}", "", "not valid JSON: trailing characters");
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let depth = 100_000;
    let text = format!(r#"{{ "security_groups": {}{} }}"#, "[".repeat(depth), "]".repeat(depth));
    assert_rejected(&text, "", "recursion limit exceeded");
    let text = format!(
        r#"{{ "security_groups": [ {{ "id": "sg-a", "name": {}0{} }} ] }}"#,
        r#"{"a":"#.repeat(depth),
        "}".repeat(depth)
    );
    assert_rejected(&text, "", "recursion limit exceeded");
}

#[test]
fn moderately_nested_json_is_a_type_error() {
    let depth = 100;
    let text = format!(r#"{{ "security_groups": [ {{ "id": {}1{} }} ] }}"#, "[".repeat(depth), "]".repeat(depth));
    assert_rejected(&text, "security_groups[0].id", "expected a string, found an array");
}
