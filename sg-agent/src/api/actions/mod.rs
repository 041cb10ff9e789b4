//! The actions: each reads the current document and the request's parameters and returns
//! the response body and, for a change, the new document. They are plain functions of the
//! document, so they run the same whatever backend holds it, and the server decides what a
//! change takes to be durable.

mod groups;
mod interfaces;
mod prefix_lists;
mod rules;

use super::{error::ApiError, query::Params, xml::Xml};
use crate::policy::Document;

/// What a request needs besides the document.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The region the request was signed for (ARNs name it).
    pub region: String,
}

/// What an action produced.
#[derive(Debug)]
pub struct Outcome {
    /// The document after the change; `None` for an action that changes nothing.
    pub document: Option<Document>,
    /// The response's elements (the server adds the root element and `requestId`).
    pub body: Xml,
}

impl Outcome {
    fn read(body: Xml) -> Outcome {
        Outcome { document: None, body }
    }

    fn change(document: Document, body: Xml) -> Outcome {
        Outcome { document: Some(document), body }
    }
}

type Action = fn(&Ctx, &Document, &Params) -> Result<Outcome, ApiError>;

/// The actions served, by name.
pub const ACTIONS: &[(&str, Action)] = &[
    ("CreateSecurityGroup", groups::create),
    ("DeleteSecurityGroup", groups::delete),
    ("DescribeSecurityGroups", groups::describe),
    ("AuthorizeSecurityGroupIngress", rules::authorize_ingress),
    ("AuthorizeSecurityGroupEgress", rules::authorize_egress),
    ("RevokeSecurityGroupIngress", rules::revoke_ingress),
    ("RevokeSecurityGroupEgress", rules::revoke_egress),
    ("DescribeSecurityGroupRules", rules::describe),
    ("ModifySecurityGroupRules", rules::modify),
    ("UpdateSecurityGroupRuleDescriptionsIngress", rules::update_descriptions_ingress),
    ("UpdateSecurityGroupRuleDescriptionsEgress", rules::update_descriptions_egress),
    ("CreateManagedPrefixList", prefix_lists::create),
    ("ModifyManagedPrefixList", prefix_lists::modify),
    ("GetManagedPrefixListEntries", prefix_lists::entries),
    ("DescribeManagedPrefixLists", prefix_lists::describe),
    ("DeleteManagedPrefixList", prefix_lists::delete),
    ("DescribeNetworkInterfaces", interfaces::describe),
    ("ModifyNetworkInterfaceAttribute", interfaces::modify),
];

/// The action of this name.
pub fn find(name: &str) -> Option<Action> {
    ACTIONS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
}

/// Parameters every action takes.
const COMMON: &[&str] = &["Action", "Version", "DryRun"];

/// Refuses parameters outside `COMMON` and `known`.
fn only(p: &Params, known: &[&str]) -> Result<(), ApiError> {
    let all: Vec<&str> = COMMON.iter().chain(known).copied().collect();
    p.only(&all)
}

/// Tags are EC2 metadata nothing here keeps: asking for them is an error, not silently nothing.
fn no_tags(p: &Params) -> Result<(), ApiError> {
    if p.structs("TagSpecification")?.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("Tags are not supported: sg-agent keeps no tags (TagSpecification)"))
    }
}

/// `<return>true</return>`.
fn returned_true() -> Xml {
    let mut x = Xml::new();
    x.leaf("return", true);
    x
}

#[cfg(test)]
mod tests;
