//! DescribeNetworkInterfaces and ModifyNetworkInterfaceAttribute: an instance of the document
//! is a network interface, its `id` the `NetworkInterfaceId`.

use super::{Ctx, Outcome, only, returned_true};
use crate::{
    api::{
        ec2::{self, OWNER_ID, VPC_ID, group_name},
        error::ApiError,
        filter::filters,
        query::Params,
        xml::Xml,
    },
    policy::{DEFAULT_GROUP, Document, Instance, limits},
};

const INTERFACE_FILTERS: &[&str] = &[
    "network-interface-id",
    "group-id",
    "group-name",
    "vpc-id",
    "owner-id",
    "private-ip-address",
    "addresses.private-ip-address",
    "ipv6-addresses.ipv6-address",
    "source-dest-check",
    "status",
];

pub fn describe(_: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["NetworkInterfaceId", "Filter", "MaxResults", "NextToken", "IncludeManagedResources"])?;
    let filters = filters(p, INTERFACE_FILTERS)?;
    let ids = p.list("NetworkInterfaceId")?;
    for id in &ids {
        instance(doc, id)?;
    }
    let selected = doc.instances.iter().filter(|i| {
        (ids.is_empty() || ids.contains(&i.id.as_str()))
            && filters.iter().all(|f| {
                let v4 = i.addresses.iter().filter(|a| a.is_ipv4()).map(ToString::to_string);
                let v6 = i.addresses.iter().filter(|a| a.is_ipv6()).map(ToString::to_string);
                match f.name.as_str() {
                    "network-interface-id" => f.any([&i.id]),
                    "group-id" => f.any(&i.security_groups),
                    "group-name" => {
                        f.any(i.security_groups.iter().map(|g| doc.group(g).map_or(g.as_str(), group_name)))
                    }
                    "vpc-id" => f.any([VPC_ID]),
                    "owner-id" => f.any([OWNER_ID]),
                    "private-ip-address" | "addresses.private-ip-address" => f.any(v4),
                    "ipv6-addresses.ipv6-address" => f.any(v6),
                    "source-dest-check" => f.any([i.source_dest_check.to_string()]),
                    _ => f.any(["in-use"]),
                }
            })
    });
    let mut x = Xml::new();
    x.list("networkInterfaceSet", selected, |x, i| write_interface(x, doc, i));
    Ok(Outcome::read(x))
}

pub fn modify(_: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["NetworkInterfaceId", "SecurityGroupId", "SourceDestCheck", "Description"])?;
    let id = p.required("NetworkInterfaceId")?;
    let current = instance(doc, id)?;
    let groups = p.list("SecurityGroupId")?;
    let check = p.structure("SourceDestCheck");
    check.only(&["Value"])?;
    let source_dest_check = check.bool("Value")?;
    if p.get("Description.Value").is_some() {
        return Err(ApiError::invalid("Descriptions of network interfaces are not kept here (Description)"));
    }
    // EC2 changes one attribute per call.
    match (groups.is_empty(), source_dest_check) {
        (true, None) => return Err(ApiError::missing("SecurityGroupId (or SourceDestCheck)")),
        (false, Some(_)) => {
            return Err(ApiError::client(
                "InvalidParameterCombination",
                "Fields for multiple attribute types specified: groupSet, sourceDestCheck",
            ));
        }
        _ => {}
    }
    let mut new = doc.clone();
    let Some(target) = new.instances.iter_mut().find(|i| i.id == current.id) else {
        return Err(not_found(id));
    };
    if let Some(check) = source_dest_check {
        target.source_dest_check = check;
    } else {
        if groups.len() > limits::GROUPS_PER_INSTANCE {
            return Err(ApiError::client(
                "SecurityGroupsPerInterfaceLimitExceeded",
                format!(
                    "The maximum number of security groups per interface ({}) has been reached.",
                    limits::GROUPS_PER_INSTANCE
                ),
            ));
        }
        let mut ids: Vec<String> = Vec::new();
        for g in groups {
            let group = ec2::group_by_id(doc, g)?;
            if !ids.contains(&group.id) {
                ids.push(group.id.clone());
            }
        }
        target.security_groups = ids;
    }
    Ok(Outcome::change(new, returned_true()))
}

fn instance<'a>(doc: &'a Document, id: &str) -> Result<&'a Instance, ApiError> {
    doc.instance(id).ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> ApiError {
    ApiError::client("InvalidNetworkInterfaceID.NotFound", format!("The networkInterface ID '{id}' does not exist"))
}

/// A `NetworkInterface`.
fn write_interface(x: &mut Xml, doc: &Document, i: &Instance) {
    let v4: Vec<_> = i.addresses.iter().filter(|a| a.is_ipv4()).collect();
    let v6: Vec<_> = i.addresses.iter().filter(|a| a.is_ipv6()).collect();
    let description = match &i.interface {
        Some(ifname) => format!("{ifname} on this node"),
        None => "on another node".to_owned(),
    };
    x.leaf("networkInterfaceId", &i.id).leaf("description", description);
    x.list("groupSet", &i.security_groups, |x, g| {
        let name = doc.group(g).map_or(if g == DEFAULT_GROUP { DEFAULT_GROUP } else { g.as_str() }, group_name);
        x.leaf("groupId", g).leaf("groupName", name);
    });
    x.leaf("interfaceType", "interface");
    x.list("ipv6AddressesSet", &v6, |x, a| {
        x.leaf("ipv6Address", a);
    });
    x.leaf("ownerId", OWNER_ID);
    x.leaf_opt("privateIpAddress", v4.first());
    x.list("privateIpAddressesSet", v4.iter().enumerate(), |x, (n, a)| {
        x.leaf("primary", n == 0).leaf("privateIpAddress", a);
    });
    x.leaf("sourceDestCheck", i.source_dest_check).leaf("status", "in-use").leaf("vpcId", VPC_ID);
    x.open("tagSet").close("tagSet");
}
