//! Authorize/Revoke Ingress/Egress, DescribeSecurityGroupRules, ModifySecurityGroupRules,
//! UpdateSecurityGroupRuleDescriptions Ingress/Egress.
//!
//! New rules are written one peer each, with their id, so that the id EC2 handed out is in the
//! document and survives restarts. A rule of several peers that a change touches is split:
//! the touched peer becomes a rule of its own, carrying its id; the others keep theirs (a
//! derived id depends on the peer, not on its neighbours).

use std::collections::HashSet;

use super::{Ctx, Outcome, no_tags, only, returned_true};
use crate::{
    api::{
        ec2::{self, Ec2Rule, RuleKey, Wanted, rules_of},
        error::ApiError,
        filter::filters,
        ids::random_id,
        query::Params,
        xml::Xml,
    },
    policy::{Direction, Document, Peer, Rule, SecurityGroup},
};

pub fn authorize_ingress(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    authorize(ctx, doc, p, Direction::Ingress)
}

pub fn authorize_egress(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    authorize(ctx, doc, p, Direction::Egress)
}

pub fn revoke_ingress(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    revoke(ctx, doc, p, Direction::Ingress)
}

pub fn revoke_egress(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    revoke(ctx, doc, p, Direction::Egress)
}

pub fn update_descriptions_ingress(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    update_descriptions(ctx, doc, p, Direction::Ingress)
}

pub fn update_descriptions_egress(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    update_descriptions(ctx, doc, p, Direction::Egress)
}

/// The permissions of an Authorize/Revoke/Update request: `IpPermissions`, or the old
/// top-level form.
fn wanted_rules(doc: &Document, p: &Params) -> Result<Vec<Wanted>, ApiError> {
    let mut wanted = ec2::permissions(doc, p, "IpPermissions")?;
    match ec2::legacy_permission(doc, p)? {
        Some(_) if !wanted.is_empty() => {
            return Err(ApiError::client(
                "InvalidParameterCombination",
                "Give IpPermissions or the top-level IpProtocol/FromPort/ToPort/CidrIp form, not both",
            ));
        }
        Some(w) => wanted.push(w),
        None => {}
    }
    Ok(wanted)
}

const PERMISSION_PARAMS: &[&str] = &[
    "GroupId",
    "GroupName",
    "IpPermissions",
    "IpProtocol",
    "FromPort",
    "ToPort",
    "CidrIp",
    "SourceSecurityGroupName",
    "SourceSecurityGroupOwnerId",
];

fn authorize(ctx: &Ctx, doc: &Document, p: &Params, direction: Direction) -> Result<Outcome, ApiError> {
    let mut known = PERMISSION_PARAMS.to_vec();
    known.push("TagSpecification");
    only(p, &known)?;
    no_tags(p)?;
    check_owner(p)?;
    // EC2 names the group of an egress change by id only.
    let group = ec2::target_group(doc, p, direction == Direction::Ingress)?;
    let wanted = wanted_rules(doc, p)?;
    if wanted.is_empty() {
        return Err(ApiError::missing("IpPermissions"));
    }
    let mut present: HashSet<RuleKey> = rules_of(group, direction).iter().map(Ec2Rule::key).collect();
    for w in &wanted {
        if !present.insert(w.key.clone()) {
            return Err(ApiError::client(
                "InvalidPermission.Duplicate",
                format!("the specified rule \"{}\" already exists", ec2::rule_words(&w.key)),
            ));
        }
    }
    if group.rules(direction).len() + wanted.len() > ec2::RULES_PER_GROUP {
        return Err(ec2::rules_limit_exceeded());
    }
    let mut taken: HashSet<String> = ec2::all_rules(doc).into_iter().map(|r| r.id).collect();
    let mut new = doc.clone();
    let group_id = group.id.clone();
    let mut added = Vec::new();
    let rules = rules_mut(&mut new, &group_id, direction)?;
    for w in wanted {
        let id = fresh_id(&mut taken);
        rules.push(w.rule(id.clone()));
        added.push((id, w));
    }
    let mut x = Xml::new();
    x.leaf("return", true);
    x.list("securityGroupRuleSet", &added, |x, (id, w)| {
        ec2::write_rule(x, &ctx.region, id, &group_id, direction, &w.key, w.description.as_deref());
    });
    Ok(Outcome::change(new, x))
}

fn revoke(ctx: &Ctx, doc: &Document, p: &Params, direction: Direction) -> Result<Outcome, ApiError> {
    let mut known = PERMISSION_PARAMS.to_vec();
    known.push("SecurityGroupRuleId");
    only(p, &known)?;
    check_owner(p)?;
    let group = ec2::target_group(doc, p, direction == Direction::Ingress)?;
    let ids = p.list("SecurityGroupRuleId")?;
    let wanted = wanted_rules(doc, p)?;
    let present = rules_of(group, direction);
    let (revoked, unknown): (Vec<&Ec2Rule<'_>>, Vec<Wanted>) = match (ids.is_empty(), wanted.is_empty()) {
        (false, false) => {
            return Err(ApiError::client(
                "InvalidParameterCombination",
                "Give IpPermissions or SecurityGroupRuleIds, not both",
            ));
        }
        (true, true) => return Err(ApiError::missing("IpPermissions (or SecurityGroupRuleId)")),
        (false, true) => {
            let mut revoked = Vec::new();
            for id in ids {
                let rule = present.iter().find(|r| r.id == id).ok_or_else(|| rule_not_found(id))?;
                revoked.push(rule);
            }
            (revoked, Vec::new())
        }
        (true, false) => {
            let mut revoked = Vec::new();
            let mut unknown = Vec::new();
            for w in wanted {
                match present.iter().find(|r| r.key() == w.key) {
                    Some(r) => revoked.push(r),
                    None => unknown.push(w),
                }
            }
            if revoked.is_empty() {
                // Nothing of it is there: EC2's error. (Some of it: EC2 revokes that and lists
                // the rest as unknown.)
                return Err(ApiError::client(
                    "InvalidPermission.NotFound",
                    "The specified rule does not exist in this security group.",
                ));
            }
            (revoked, unknown)
        }
    };
    // Every place the revoked rules are written (a document may say one rule twice; EC2 shows
    // it once, and revoking it removes it).
    let ids: HashSet<&str> = revoked.iter().map(|r| r.id.as_str()).collect();
    let gone = positions(group, direction, &ids);
    let mut x = Xml::new();
    x.leaf("return", true);
    ec2::write_permissions(&mut x, "unknownIpPermissionSet", unknown.iter().map(|w| (w.key.clone(), None)));
    x.list("revokedSecurityGroupRuleSet", &revoked, |x, r| {
        x.leaf("securityGroupRuleId", &r.id)
            .leaf("groupId", &group.id)
            .leaf("isEgress", direction == Direction::Egress)
            .leaf("ipProtocol", ec2::protocol_text(r.rule.protocol));
        if let Some((from, to)) = ec2::port_numbers(r.rule.protocol, r.rule.ports, true) {
            x.leaf("fromPort", from).leaf("toPort", to);
        }
        ec2::write_peer(x, r.peer, false);
        x.leaf_opt("description", r.rule.description.as_deref());
    });
    let _ = ctx;
    let group_id = group.id.clone();
    let mut new = doc.clone();
    let rules = rules_mut(&mut new, &group_id, direction)?;
    *rules = without(rules, &gone);
    Ok(Outcome::change(new, x))
}

/// Where the EC2 rules with these ids are written: (rule, peer) positions.
fn positions(group: &SecurityGroup, direction: Direction, ids: &HashSet<&str>) -> HashSet<(usize, usize)> {
    let mut out = HashSet::new();
    for (i, rule) in group.rules(direction).iter().enumerate() {
        for (j, peer) in rule.peers.iter().enumerate() {
            let id = match &rule.id {
                Some(id) => id.clone(),
                None => crate::policy::rule_id::derived(&group.id, direction, rule.protocol, rule.ports, peer),
            };
            if ids.contains(id.as_str()) {
                out.insert((i, j));
            }
        }
    }
    out
}

/// `rules` without the (rule, peer) positions in `gone`; rules left without peers go.
fn without(rules: &[Rule], gone: &HashSet<(usize, usize)>) -> Vec<Rule> {
    rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let peers: Vec<Peer> = rule
                .peers
                .iter()
                .enumerate()
                .filter(|(j, _)| !gone.contains(&(i, *j)))
                .map(|(_, p)| p.clone())
                .collect();
            (!peers.is_empty()).then(|| Rule { peers, ..rule.clone() })
        })
        .collect()
}

const RULE_FILTERS: &[&str] = &["group-id", "security-group-rule-id"];

pub fn describe(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["SecurityGroupRuleId", "Filter", "MaxResults", "NextToken"])?;
    let filters = filters(p, RULE_FILTERS)?;
    let ids = p.list("SecurityGroupRuleId")?;
    let all = ec2::all_rules(doc);
    for id in &ids {
        if !all.iter().any(|r| r.id == *id) {
            return Err(rule_not_found(id));
        }
    }
    let selected = all.iter().filter(|r| {
        (ids.is_empty() || ids.contains(&r.id.as_str()))
            && filters.iter().all(|f| match f.name.as_str() {
                "group-id" => f.any([&r.group.id]),
                _ => f.any([&r.id]),
            })
    });
    let mut x = Xml::new();
    x.list("securityGroupRuleSet", selected, |x, r| {
        ec2::write_rule(x, &ctx.region, &r.id, &r.group.id, r.direction, &r.key(), r.rule.description.as_deref());
    });
    Ok(Outcome::read(x))
}

pub fn modify(_: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["GroupId", "SecurityGroupRule"])?;
    let group = ec2::group_by_id(doc, p.required("GroupId")?)?;
    let changes = p.structs("SecurityGroupRule")?;
    if changes.is_empty() {
        return Err(ApiError::missing("SecurityGroupRule"));
    }
    let group_id = group.id.clone();
    let mut new = doc.clone();
    for change in changes {
        change.only(&["SecurityGroupRuleId", "SecurityGroupRule"])?;
        let id = change.required("SecurityGroupRuleId")?;
        let spec = change.structure("SecurityGroupRule");
        spec.only(&[
            "IpProtocol",
            "FromPort",
            "ToPort",
            "CidrIpv4",
            "CidrIpv6",
            "PrefixListId",
            "ReferencedGroupId",
            "Description",
        ])?;
        let protocol = ec2::protocol(&spec, "IpProtocol")?;
        let ports = ec2::ports(&spec, protocol)?;
        let mut peers = Vec::new();
        if spec.get("CidrIpv4").is_some() {
            peers.push(Peer::Cidr(ec2::cidr(&spec, "CidrIpv4", Some(false))?));
        }
        if spec.get("CidrIpv6").is_some() {
            peers.push(Peer::Cidr(ec2::cidr(&spec, "CidrIpv6", Some(true))?));
        }
        if let Some(list) = spec.get("PrefixListId") {
            if new.prefix_list(list).is_none() {
                return Err(ec2::prefix_list_not_found(list));
            }
            peers.push(Peer::PrefixList(list.to_owned()));
        }
        if let Some(other) = spec.get("ReferencedGroupId") {
            peers.push(Peer::Group(ec2::group_by_id(&new, other)?.id.clone()));
        }
        let [peer] = <[Peer; 1]>::try_from(peers).map_err(|_| {
            ApiError::invalid(format!(
                "{}: give exactly one of CidrIpv4, CidrIpv6, PrefixListId, ReferencedGroupId",
                spec.name("").trim_end_matches('.')
            ))
        })?;
        let key = RuleKey::new(protocol, ports, peer);
        let description = ec2::description(&spec, "Description")?;
        let direction = {
            let group = ec2::group_by_id(&new, &group_id)?;
            let found = [Direction::Ingress, Direction::Egress]
                .into_iter()
                .find_map(|d| rules_of(group, d).into_iter().find(|r| r.id == id))
                .ok_or_else(|| rule_not_found(id))?;
            let duplicate = rules_of(group, found.direction).iter().any(|r| r.id != id && r.key() == key);
            if duplicate {
                return Err(ApiError::client(
                    "InvalidPermission.Duplicate",
                    format!("the specified rule \"{}\" already exists", ec2::rule_words(&key)),
                ));
            }
            found.direction
        };
        let rule = isolate(&mut new, &group_id, direction, id)?;
        *rule = Wanted { key, description }.rule(id.to_owned());
    }
    Ok(Outcome::change(new, returned_true()))
}

fn update_descriptions(_: &Ctx, doc: &Document, p: &Params, direction: Direction) -> Result<Outcome, ApiError> {
    only(p, &["GroupId", "GroupName", "IpPermissions", "SecurityGroupRuleDescription"])?;
    let group = ec2::target_group(doc, p, true)?;
    let wanted = ec2::permissions(doc, p, "IpPermissions")?;
    let by_id = p.structs("SecurityGroupRuleDescription")?;
    let present = rules_of(group, direction);
    // (rule id, new description)
    let mut updates: Vec<(String, Option<String>)> = Vec::new();
    for w in wanted {
        let rule = present.iter().find(|r| r.key() == w.key).ok_or_else(|| {
            ApiError::client(
                "InvalidPermission.NotFound",
                format!("The specified rule \"{}\" does not exist in this security group.", ec2::rule_words(&w.key)),
            )
        })?;
        updates.push((rule.id.clone(), w.description));
    }
    for d in by_id {
        d.only(&["SecurityGroupRuleId", "Description"])?;
        let id = d.required("SecurityGroupRuleId")?;
        if !present.iter().any(|r| r.id == id) {
            return Err(rule_not_found(id));
        }
        updates.push((id.to_owned(), ec2::description(&d, "Description")?));
    }
    if updates.is_empty() {
        return Err(ApiError::missing("IpPermissions (or SecurityGroupRuleDescription)"));
    }
    let group_id = group.id.clone();
    let mut new = doc.clone();
    for (id, description) in updates {
        let unchanged = rules_of(ec2::group_by_id(&new, &group_id)?, direction)
            .iter()
            .any(|r| r.id == id && r.rule.description == description);
        if !unchanged {
            isolate(&mut new, &group_id, direction, &id)?.description = description;
        }
    }
    Ok(Outcome::change(new, returned_true()))
}

/// Makes the EC2 rule `id` a native rule of its own (one peer, carrying its id) and returns
/// it, leaving the other peers of its rule where they were.
fn isolate<'a>(doc: &'a mut Document, group: &str, direction: Direction, id: &str) -> Result<&'a mut Rule, ApiError> {
    let (rule_index, peer_index) = {
        let g = ec2::group_by_id(doc, group)?;
        let r = rules_of(g, direction).into_iter().find(|r| r.id == id).ok_or_else(|| rule_not_found(id))?;
        (r.rule_index, r.peer_index)
    };
    let rules = rules_mut(doc, group, direction)?;
    let at = match rules.get_mut(rule_index) {
        Some(rule) if rule.peers.len() == 1 => {
            rule.id = Some(id.to_owned());
            rule_index
        }
        Some(rule) => {
            let mut single = rule.clone();
            single.peers = vec![rule.peers.remove(peer_index)];
            single.id = Some(id.to_owned());
            rules.insert(rule_index + 1, single);
            rule_index + 1
        }
        None => return Err(rule_not_found(id)),
    };
    rules.get_mut(at).ok_or_else(|| rule_not_found(id))
}

fn rules_mut<'a>(doc: &'a mut Document, group: &str, direction: Direction) -> Result<&'a mut Vec<Rule>, ApiError> {
    let g: &mut SecurityGroup =
        doc.security_groups.iter_mut().find(|g| g.id == group).ok_or_else(|| ApiError::group_not_found(group))?;
    Ok(match direction {
        Direction::Ingress => &mut g.ingress,
        Direction::Egress => &mut g.egress,
    })
}

/// A new rule id, unused in the document.
fn fresh_id(taken: &mut HashSet<String>) -> String {
    loop {
        let id = random_id("sgr-");
        if taken.insert(id.clone()) {
            return id;
        }
    }
}

fn rule_not_found(id: &str) -> ApiError {
    if crate::policy::rule_id::is_valid(id) {
        ApiError::client(
            "InvalidSecurityGroupRuleId.NotFound",
            format!("The security group rule ID '{id}' does not exist"),
        )
    } else {
        ApiError::client(
            "InvalidSecurityGroupRuleId.Malformed",
            format!("Invalid id: \"{id}\" (expecting \"sgr-...\")"),
        )
    }
}

/// `SourceSecurityGroupOwnerId`, if given, must be this account.
fn check_owner(p: &Params) -> Result<(), ApiError> {
    match p.get("SourceSecurityGroupOwnerId") {
        Some(owner) if owner != ec2::OWNER_ID => Err(ApiError::invalid(format!(
            "SourceSecurityGroupOwnerId {owner} is another account; groups here belong to {}",
            ec2::OWNER_ID
        ))),
        _ => Ok(()),
    }
}
