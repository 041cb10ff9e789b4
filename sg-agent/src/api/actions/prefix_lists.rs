//! The managed prefix list actions: Create, Modify (add and remove entries against the
//! current version), GetManagedPrefixListEntries, Describe, Delete.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::{Ctx, Outcome, no_tags, only};
use crate::{
    api::{
        ec2::{self, OWNER_ID},
        error::ApiError,
        filter::filters,
        ids::random_id,
        query::Params,
        xml::Xml,
    },
    policy::{AddressFamily, Document, Peer, PrefixList, PrefixListMeta, limits},
};

/// Entries a list may hold when its document gives no `max_entries`: the document's limit.
const MAX_ENTRIES: usize = limits::CIDRS_PER_PREFIX_LIST;

pub fn create(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["PrefixListName", "Entry", "MaxEntries", "AddressFamily", "TagSpecification", "ClientToken"])?;
    no_tags(p)?;
    let name = ec2::text_value(p, "PrefixListName", p.required("PrefixListName")?)?;
    let family_text = p.required("AddressFamily")?;
    let family = AddressFamily::from_name(family_text)
        .ok_or_else(|| ApiError::invalid(format!("Invalid AddressFamily '{family_text}': IPv4 or IPv6")))?;
    let max = max_entries(p)?.ok_or_else(|| ApiError::missing("MaxEntries"))?;
    if doc.prefix_lists.len() >= limits::PREFIX_LISTS {
        return Err(ApiError::invalid(format!(
            "The maximum number of prefix lists ({}) has been reached",
            limits::PREFIX_LISTS
        )));
    }
    let mut list = PrefixList {
        id: loop {
            let id = random_id("pl-");
            if doc.prefix_list(&id).is_none() {
                break id;
            }
        },
        name: Some(name.to_owned()),
        cidrs: Vec::new(),
        meta: PrefixListMeta {
            max_entries: Some(max),
            address_family: Some(family),
            version: Some(1),
            ..Default::default()
        },
    };
    add_entries(&mut list, p, "Entry")?;
    check_size(&list, max)?;
    let mut x = Xml::new();
    x.open("prefixList");
    write_list(&mut x, &ctx.region, &list, "create-complete");
    x.close("prefixList");
    let mut new = doc.clone();
    new.prefix_lists.push(list);
    Ok(Outcome::change(new, x))
}

pub fn modify(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["PrefixListId", "CurrentVersion", "PrefixListName", "AddEntry", "RemoveEntry", "MaxEntries"])?;
    let id = p.required("PrefixListId")?;
    let mut list = doc.prefix_list(id).ok_or_else(|| ec2::prefix_list_not_found(id))?.clone();
    let version = list.meta.version.unwrap_or(1);
    let entries_change = !p.structs("AddEntry")?.is_empty() || !p.structs("RemoveEntry")?.is_empty();
    let new_max = max_entries(p)?;
    if entries_change && new_max.is_some() {
        return Err(ApiError::client(
            "InvalidParameterCombination",
            "You cannot modify the entries of a prefix list and modify the size of a prefix list at the same time.",
        ));
    }
    if let Some(current) = p.int("CurrentVersion")?
        && u64::try_from(current).ok() != Some(version)
    {
        return Err(ApiError::client(
            "PrefixListVersionMismatch",
            format!("The prefix list has the incorrect version number (it is at version {version}, not {current})."),
        ));
    }
    if let Some(name) = p.get("PrefixListName") {
        list.name = Some(ec2::text_value(p, "PrefixListName", name)?.to_owned());
    }
    if entries_change {
        for entry in p.structs("RemoveEntry")? {
            entry.only(&["Cidr"])?;
            let net = ec2::cidr(&entry, "Cidr", None)?;
            if !list.cidrs.contains(&net) {
                return Err(ApiError::client(
                    "InvalidPrefixListModification",
                    format!("The prefix list entry {net} does not exist."),
                ));
            }
            list.cidrs.retain(|c| *c != net);
            list.meta.entry_descriptions.remove(&net);
        }
        add_entries(&mut list, p, "AddEntry")?;
        list.meta.version = Some(version + 1);
    }
    if let Some(max) = new_max {
        list.meta.max_entries = Some(max);
    }
    check_size(&list, list.meta.max_entries.unwrap_or(MAX_ENTRIES as u32))?;
    let mut x = Xml::new();
    x.open("prefixList");
    write_list(&mut x, &ctx.region, &list, "modify-complete");
    x.close("prefixList");
    let mut new = doc.clone();
    if let Some(slot) = new.prefix_lists.iter_mut().find(|l| l.id == list.id) {
        *slot = list;
    }
    Ok(Outcome::change(new, x))
}

pub fn entries(_: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["PrefixListId", "TargetVersion", "MaxResults", "NextToken"])?;
    let id = p.required("PrefixListId")?;
    let list = doc.prefix_list(id).ok_or_else(|| ec2::prefix_list_not_found(id))?;
    let version = list.meta.version.unwrap_or(1);
    if let Some(target) = p.int("TargetVersion")?
        && u64::try_from(target).ok() != Some(version)
    {
        return Err(ApiError::invalid(format!(
            "Version {target} of prefix list {id} is not kept here; its current version is {version}"
        )));
    }
    let mut x = Xml::new();
    x.list("entrySet", &list.cidrs, |x, c| {
        x.leaf("cidr", c).leaf_opt("description", list.meta.entry_descriptions.get(c));
    });
    Ok(Outcome::read(x))
}

pub fn describe(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["PrefixListId", "Filter", "MaxResults", "NextToken"])?;
    let filters = filters(p, &["prefix-list-id", "prefix-list-name", "owner-id"])?;
    let ids = p.list("PrefixListId")?;
    for id in &ids {
        doc.prefix_list(id).ok_or_else(|| ec2::prefix_list_not_found(id))?;
    }
    let selected = doc.prefix_lists.iter().filter(|l| {
        (ids.is_empty() || ids.contains(&l.id.as_str()))
            && filters.iter().all(|f| match f.name.as_str() {
                "prefix-list-id" => f.any([&l.id]),
                "prefix-list-name" => f.any([l.name.as_deref().unwrap_or(&l.id)]),
                _ => f.any([OWNER_ID]),
            })
    });
    let mut x = Xml::new();
    x.list("prefixListSet", selected, |x, l| write_list(x, &ctx.region, l, state(l)));
    Ok(Outcome::read(x))
}

pub fn delete(ctx: &Ctx, doc: &Document, p: &Params) -> Result<Outcome, ApiError> {
    only(p, &["PrefixListId"])?;
    let id = p.required("PrefixListId")?;
    let list = doc.prefix_list(id).ok_or_else(|| ec2::prefix_list_not_found(id))?;
    let peer = Peer::PrefixList(id.to_owned());
    if let Some(g) =
        doc.security_groups.iter().find(|g| g.ingress.iter().chain(&g.egress).any(|r| r.peers.contains(&peer)))
    {
        return Err(ApiError::client(
            "DependencyViolation",
            format!("resource {id} has a dependent object (a rule of security group {})", g.id),
        ));
    }
    let mut x = Xml::new();
    x.open("prefixList");
    write_list(&mut x, &ctx.region, list, "delete-complete");
    x.close("prefixList");
    let mut new = doc.clone();
    new.prefix_lists.retain(|l| l.id != id);
    Ok(Outcome::change(new, x))
}

/// `MaxEntries`, 1 up to the document's limit.
fn max_entries(p: &Params) -> Result<Option<u32>, ApiError> {
    match p.int("MaxEntries")? {
        None => Ok(None),
        Some(n) if (1..=MAX_ENTRIES as i64).contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(ApiError::invalid(format!("MaxEntries {n} is not 1-{MAX_ENTRIES}"))),
    }
}

/// Adds `member.N.Cidr` (with `Description`); a CIDR already there gets the new description.
fn add_entries(list: &mut PrefixList, p: &Params, member: &str) -> Result<(), ApiError> {
    let mut added: BTreeMap<IpNet, ()> = BTreeMap::new();
    for entry in p.structs(member)? {
        entry.only(&["Cidr", "Description"])?;
        let net = ec2::cidr(&entry, "Cidr", None)?;
        let family = list.meta.address_family.unwrap_or_else(|| family_of(list));
        if AddressFamily::of(&net) != family {
            return Err(ApiError::invalid(format!(
                "{}: {net} is not {}, the prefix list's address family",
                entry.name("Cidr"),
                family.name()
            )));
        }
        if added.insert(net, ()).is_some() {
            return Err(ApiError::invalid(format!("{}: {net} is given twice", entry.name("Cidr"))));
        }
        if !list.cidrs.contains(&net) {
            list.cidrs.push(net);
        }
        match ec2::description(&entry, "Description")? {
            Some(d) => list.meta.entry_descriptions.insert(net, d),
            None => list.meta.entry_descriptions.remove(&net),
        };
    }
    Ok(())
}

fn check_size(list: &PrefixList, max: u32) -> Result<(), ApiError> {
    if list.cidrs.len() > max as usize {
        return Err(ApiError::client(
            "PrefixListMaxEntriesExceeded",
            format!("The prefix list would hold {} entries, more than its maximum of {max}.", list.cidrs.len()),
        ));
    }
    Ok(())
}

/// The family of a list that does not state one: IPv6 if every entry is, else IPv4.
fn family_of(list: &PrefixList) -> AddressFamily {
    if !list.cidrs.is_empty() && list.cidrs.iter().all(|c| matches!(c, IpNet::V6(_))) {
        AddressFamily::Ipv6
    } else {
        AddressFamily::Ipv4
    }
}

/// EC2's state of a list: created and never changed, or changed since.
fn state(list: &PrefixList) -> &'static str {
    if list.meta.version.unwrap_or(1) > 1 { "modify-complete" } else { "create-complete" }
}

/// A `ManagedPrefixList`.
fn write_list(x: &mut Xml, region: &str, list: &PrefixList, state: &str) {
    let family = match list.meta.address_family {
        Some(f) => f.name(),
        // A document's list may mix families (EC2's cannot): say so.
        None if list.cidrs.iter().any(|c| c.addr().is_ipv4()) && list.cidrs.iter().any(|c| c.addr().is_ipv6()) => {
            "IPv4,IPv6"
        }
        None => family_of(list).name(),
    };
    x.leaf("prefixListId", &list.id)
        .leaf("addressFamily", family)
        .leaf("state", state)
        .leaf("prefixListArn", format!("arn:aws:ec2:{region}:{OWNER_ID}:prefix-list/{}", list.id))
        .leaf("prefixListName", list.name.as_deref().unwrap_or(&list.id))
        .leaf("maxEntries", list.meta.max_entries.map_or(MAX_ENTRIES, |m| m as usize))
        .leaf("version", list.meta.version.unwrap_or(1));
    x.open("tagSet").close("tagSet");
    x.leaf("ownerId", OWNER_ID);
}
