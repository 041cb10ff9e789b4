//! What an apply changed, for `apply`'s summary: groups, rules, group membership, enforced
//! instances.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{
    compile::Compiled,
    policy::{Direction, Document, Peer, Ports, Protocol},
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// False when the previous document is unknown (the first apply after adopting pinned
    /// state from an earlier agent): everything is then reported as added.
    pub previous_known: bool,
    pub groups_added: Vec<String>,
    pub groups_removed: Vec<String>,
    /// Groups whose rules changed.
    pub groups_changed: Vec<String>,
    pub rules_added: usize,
    pub rules_removed: usize,
    /// "group: instance".
    pub members_added: Vec<String>,
    pub members_removed: Vec<String>,
    /// Instances enforced on this node (by interface) that appeared or went.
    pub instances_attached: Vec<String>,
    pub instances_detached: Vec<String>,
}

type RuleIdentity = (String, Direction, Protocol, Ports, Peer);

fn rules(c: &Compiled) -> BTreeMap<RuleIdentity, usize> {
    let mut out = BTreeMap::new();
    for r in &c.rules {
        *out.entry((r.group.clone(), r.direction, r.protocol, r.ports, r.peer.clone())).or_insert(0) += 1;
    }
    out
}

fn members(d: &Document) -> BTreeSet<String> {
    d.instances.iter().flat_map(|i| i.security_groups.iter().map(move |g| format!("{g}: {}", i.id))).collect()
}

fn local(d: &Document) -> BTreeSet<String> {
    d.local_instances().map(|i| format!("{} ({})", i.id, i.interface.as_deref().unwrap_or_default())).collect()
}

/// The differences between the previous document (if known) and the next.
pub fn diff(previous: Option<(&Document, &Compiled)>, next: &Document, next_compiled: &Compiled) -> Changes {
    let empty_doc = Document::default();
    let empty_compiled = Compiled::default();
    let (prev_doc, prev_compiled) = previous.unwrap_or((&empty_doc, &empty_compiled));
    let group_ids = |d: &Document| d.security_groups.iter().map(|g| g.id.clone()).collect::<BTreeSet<_>>();
    let (before, after) = (group_ids(prev_doc), group_ids(next));
    let (rules_before, rules_after) = (rules(prev_compiled), rules(next_compiled));
    let count = |from: &BTreeMap<RuleIdentity, usize>, minus: &BTreeMap<RuleIdentity, usize>| -> usize {
        from.iter().map(|(k, n)| n.saturating_sub(minus.get(k).copied().unwrap_or(0))).sum()
    };
    let changed_groups: BTreeSet<String> = rules_before
        .keys()
        .filter(|k| !rules_after.contains_key(*k))
        .chain(rules_after.keys().filter(|k| !rules_before.contains_key(*k)))
        .map(|k| k.0.clone())
        .filter(|g| before.contains(g) && after.contains(g))
        .collect();
    let (m_before, m_after) = (members(prev_doc), members(next));
    let (l_before, l_after) = (local(prev_doc), local(next));
    Changes {
        previous_known: previous.is_some(),
        groups_added: after.difference(&before).cloned().collect(),
        groups_removed: before.difference(&after).cloned().collect(),
        groups_changed: changed_groups.into_iter().collect(),
        rules_added: count(&rules_after, &rules_before),
        rules_removed: count(&rules_before, &rules_after),
        members_added: m_after.difference(&m_before).cloned().collect(),
        members_removed: m_before.difference(&m_after).cloned().collect(),
        instances_attached: l_after.difference(&l_before).cloned().collect(),
        instances_detached: l_before.difference(&l_after).cloned().collect(),
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
        if !self.previous_known {
            writeln!(f, "(previous document unknown: adopted from an earlier agent)")?;
        }
        writeln!(
            f,
            "groups:    +[{}] -[{}] changed [{}]",
            list(&self.groups_added),
            list(&self.groups_removed),
            list(&self.groups_changed)
        )?;
        writeln!(f, "rules:     +{} -{}", self.rules_added, self.rules_removed)?;
        writeln!(f, "members:   +[{}] -[{}]", list(&self.members_added), list(&self.members_removed))?;
        write!(f, "instances: +[{}] -[{}]", list(&self.instances_attached), list(&self.instances_detached))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> (Document, Compiled) {
        crate::compile::prepare(text, None).unwrap()
    }

    #[test]
    fn reports_groups_rules_members_and_instances() {
        let a = doc(r#"{ "security_groups": [
                { "id": "web", "ingress": [ { "protocol": "tcp", "from_port": 80, "to_port": 80, "cidrs": ["0.0.0.0/0"] } ] },
                { "id": "old" } ],
              "instances": [ { "id": "w1", "interface": "veth-w1", "addresses": ["10.0.0.1"], "security_groups": ["web"] },
                             { "id": "o1", "addresses": ["10.0.0.2"], "security_groups": ["old"] } ] }"#);
        let b = doc(r#"{ "security_groups": [
                { "id": "web", "ingress": [ { "protocol": "tcp", "from_port": 443, "to_port": 443, "cidrs": ["0.0.0.0/0"] } ] },
                { "id": "new" } ],
              "instances": [ { "id": "w1", "interface": "veth-w1", "addresses": ["10.0.0.1"], "security_groups": ["web", "new"] },
                             { "id": "w2", "interface": "veth-w2", "addresses": ["10.0.0.3"], "security_groups": ["web"] } ] }"#);
        let c = diff(Some((&a.0, &a.1)), &b.0, &b.1);
        assert!(c.previous_known);
        assert_eq!(c.groups_added, vec!["new"]);
        assert_eq!(c.groups_removed, vec!["old"]);
        assert_eq!(c.groups_changed, vec!["web"]);
        // web's 80 became 443; `old` took its default egress (to 0.0.0.0/0 and ::/0) with it and
        // `new` brought its own.
        assert_eq!((c.rules_added, c.rules_removed), (3, 3));
        assert_eq!(c.members_added, vec!["new: w1", "web: w2"]);
        assert_eq!(c.members_removed, vec!["old: o1"]);
        assert_eq!(c.instances_attached, vec!["w2 (veth-w2)"]);
        assert!(c.instances_detached.is_empty());
        assert_eq!(diff(Some((&b.0, &b.1)), &b.0, &b.1), Changes { previous_known: true, ..Changes::default() });
    }
}
