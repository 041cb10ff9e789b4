//! CreateSecurityGroup, DeleteSecurityGroup, DescribeSecurityGroups.

use super::{Ctx, Outcome, no_tags, only};
use crate::{
    api::{
        ec2::{self, OWNER_ID, VPC_ID, group_name, rules_of},
        error::ApiError,
        filter::{Filter, filters},
        ids::random_id,
        query::Params,
        xml::Xml,
    },
    policy::{Direction, Document, Peer, Rule, SecurityGroup, limits},
};

pub fn create(_: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["GroupName", "GroupDescription", "VpcId", "TagSpecification"])?;
    no_tags(p)?;
    let name = ec2::text_value(p, "GroupName", p.required("GroupName")?)?;
    let description = ec2::text_value(p, "GroupDescription", p.required("GroupDescription")?)?;
    if let Some(vpc) = p.get("VpcId").filter(|v| *v != VPC_ID) {
        return Err(ApiError::client("InvalidVpcID.NotFound", format!("The vpc ID '{vpc}' does not exist")));
    }
    if name.eq_ignore_ascii_case("default") {
        return Err(ApiError::invalid("Cannot use reserved security group name: default"));
    }
    if name.starts_with("sg-") {
        return Err(ApiError::invalid("Group names may not be in the format sg-*"));
    }
    if doc.security_groups.iter().any(|g| group_name(g) == name) {
        return Err(ApiError::client(
            "InvalidGroup.Duplicate",
            format!("The security group '{name}' already exists for VPC '{VPC_ID}'"),
        ));
    }
    if doc.security_groups.len() >= limits::SECURITY_GROUPS {
        return Err(ApiError::client(
            "SecurityGroupLimitExceeded",
            format!("The maximum number of security groups ({}) has been reached.", limits::SECURITY_GROUPS),
        ));
    }
    let id = loop {
        let id = random_id("sg-");
        if doc.group(&id).is_none() {
            break id;
        }
    };
    let mut new = doc.clone();
    // EC2's creation default: no inbound, all outbound.
    new.security_groups.push(SecurityGroup {
        id: id.clone(),
        name: Some(name.to_owned()),
        description: Some(description.to_owned()),
        ingress: Vec::new(),
        egress: Rule::allow_all_outbound(),
    });
    let mut x = Xml::new();
    x.leaf("return", true).leaf("groupId", &id);
    Ok(Outcome::change(new, x))
}

pub fn delete(_: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["GroupId", "GroupName"])?;
    let group = ec2::target_group(doc, p, true)?;
    if ec2::is_default(group) {
        return Err(ApiError::client(
            "CannotDelete",
            format!(
                "the specified group: \"{}\" name: \"{}\" cannot be deleted by a user",
                group.id,
                group_name(group)
            ),
        ));
    }
    // Referenced by another group's rule (a group may refer to itself), or in use by an
    // instance: EC2 refuses either.
    let referrer = doc.security_groups.iter().filter(|g| g.id != group.id).find(|g| {
        g.ingress.iter().chain(&g.egress).any(|r| r.peers.iter().any(|peer| *peer == Peer::Group(group.id.clone())))
    });
    let user = doc.instances.iter().find(|i| i.security_groups.contains(&group.id));
    let dependent = match (referrer, user) {
        (Some(g), _) => Some(format!("security group {}", g.id)),
        (None, Some(i)) => Some(format!("network interface {}", i.id)),
        (None, None) => None,
    };
    if let Some(dependent) = dependent {
        return Err(ApiError::client(
            "DependencyViolation",
            format!("resource {} has a dependent object ({dependent})", group.id),
        ));
    }
    let id = group.id.clone();
    let mut new = doc.clone();
    new.security_groups.retain(|g| g.id != id);
    let mut x = Xml::new();
    x.leaf("return", true).leaf("groupId", id);
    Ok(Outcome::change(new, x))
}

const GROUP_FILTERS: &[&str] = &[
    "description",
    "group-id",
    "group-name",
    "owner-id",
    "vpc-id",
    "ip-permission.cidr",
    "ip-permission.from-port",
    "ip-permission.group-id",
    "ip-permission.group-name",
    "ip-permission.ipv6-cidr",
    "ip-permission.prefix-list-id",
    "ip-permission.protocol",
    "ip-permission.to-port",
    "ip-permission.user-id",
    "egress.ip-permission.cidr",
    "egress.ip-permission.from-port",
    "egress.ip-permission.group-id",
    "egress.ip-permission.group-name",
    "egress.ip-permission.ipv6-cidr",
    "egress.ip-permission.prefix-list-id",
    "egress.ip-permission.protocol",
    "egress.ip-permission.to-port",
    "egress.ip-permission.user-id",
];

pub fn describe(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["GroupId", "GroupName", "Filter", "MaxResults", "NextToken"])?;
    let filters = filters(p, GROUP_FILTERS)?;
    let ids = p.list("GroupId")?;
    let names = p.list("GroupName")?;
    for id in &ids {
        ec2::group_by_id(doc, id)?;
    }
    for name in &names {
        ec2::group_by_name(doc, name)?;
    }
    let selected = doc.security_groups.iter().filter(|g| {
        (ids.is_empty() || ids.contains(&g.id.as_str()))
            && (names.is_empty() || names.contains(&group_name(g)))
            && filters.iter().all(|f| group_matches(doc, g, f))
    });
    let mut x = Xml::new();
    x.list("securityGroupInfo", selected, |x, g| write_group(x, &ctx.region, g));
    Ok(Outcome::read(x))
}

fn group_matches(doc: &Document, g: &SecurityGroup, f: &Filter) -> bool {
    let (direction, field) = match f.name.strip_prefix("egress.ip-permission.") {
        Some(field) => (Direction::Egress, field),
        None => match f.name.strip_prefix("ip-permission.") {
            Some(field) => (Direction::Ingress, field),
            None => {
                return match f.name.as_str() {
                    "description" => f.any([g.description.as_deref().unwrap_or_default()]),
                    "group-id" => f.any([&g.id]),
                    "group-name" => f.any([group_name(g)]),
                    "owner-id" => f.any([OWNER_ID]),
                    _ => f.any([VPC_ID]),
                };
            }
        },
    };
    rules_of(g, direction).iter().any(|r| {
        let ports = ec2::port_numbers(r.rule.protocol, r.rule.ports, false);
        match (field, r.peer) {
            ("cidr", Peer::Cidr(net)) if net.addr().is_ipv4() => f.any([net.to_string()]),
            ("ipv6-cidr", Peer::Cidr(net)) if net.addr().is_ipv6() => f.any([net.to_string()]),
            ("group-id", Peer::Group(id)) => f.any([id]),
            ("group-name", Peer::Group(id)) => f.any([doc.group(id).map_or(id.as_str(), group_name)]),
            ("user-id", Peer::Group(_)) => f.any([OWNER_ID]),
            ("prefix-list-id", Peer::PrefixList(id)) => f.any([id]),
            ("protocol", _) => {
                let number = r.rule.protocol.number().map(|n| n.to_string());
                f.any([Some(ec2::protocol_text(r.rule.protocol)), number].into_iter().flatten())
            }
            ("from-port", _) => ports.is_some_and(|(from, _)| f.any([from.to_string()])),
            ("to-port", _) => ports.is_some_and(|(_, to)| f.any([to.to_string()])),
            _ => false,
        }
    })
}

/// A `SecurityGroup` as `DescribeSecurityGroups` returns it.
fn write_group(x: &mut Xml, region: &str, g: &SecurityGroup) {
    x.leaf("ownerId", OWNER_ID)
        .leaf("groupId", &g.id)
        .leaf("groupName", group_name(g))
        .leaf("groupDescription", g.description.as_deref().unwrap_or_default())
        .leaf("vpcId", VPC_ID)
        .leaf("securityGroupArn", format!("arn:aws:ec2:{region}:{OWNER_ID}:security-group/{}", g.id));
    for (tag, direction) in [("ipPermissions", Direction::Ingress), ("ipPermissionsEgress", Direction::Egress)] {
        let rules = rules_of(g, direction);
        ec2::write_permissions(x, tag, rules.iter().map(|r| (r.key(), r.rule.description.as_deref())));
    }
    x.open("tagSet").close("tagSet");
}
