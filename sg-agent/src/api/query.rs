//! EC2's Query parameters: `name=value` pairs, form-encoded in a POST body or in the query
//! string of a GET, with lists flattened as `Name.1`, `Name.2` and structures as
//! `IpPermissions.1.IpRanges.1.CidrIp` (1-based, as botocore's EC2 serializer writes them).

use std::collections::BTreeMap;

use super::error::ApiError;

/// Parameters in one request, or the members of one element of a list of structures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// The parameter path (empty at the top): `IpPermissions.1.`, for messages.
    prefix: String,
    map: BTreeMap<String, String>,
}

impl Params {
    /// Parameters from `name=value` pairs; a name given twice is an error (which one would win
    /// is not obvious, so neither does).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Params, ApiError> {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if k.is_empty() {
                continue;
            }
            if map.contains_key(&k) {
                return Err(ApiError::invalid(format!("The parameter {k} is given more than once")));
            }
            map.insert(k, v);
        }
        Ok(Params { prefix: String::new(), map })
    }

    /// The full name of a member, for messages: `IpPermissions.1.FromPort`.
    pub fn name(&self, member: &str) -> String {
        format!("{}{member}", self.prefix)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::missing(&self.name(name))),
        }
    }

    /// An integer member (`FromPort`, `MaxEntries`).
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::invalid(format!("Invalid value '{v}' for {}: an integer is expected", self.name(name)))
                })
            })
            .transpose()
    }

    /// A boolean member (`DryRun`, `SourceDestCheck.Value`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        self.get(name)
            .map(|v| match v {
                "true" | "True" | "TRUE" => Ok(true),
                "false" | "False" | "FALSE" => Ok(false),
                _ => Err(ApiError::invalid(format!("Invalid value '{v}' for {}: true or false", self.name(name)))),
            })
            .transpose()
    }

    /// The values of a list of strings: `name.1`, `name.2`, … in index order.
    pub fn list(&self, name: &str) -> Result<Vec<&str>, ApiError> {
        let mut items: Vec<(u32, &str)> = Vec::new();
        let dotted = format!("{name}.");
        for (k, v) in self.map.range(dotted.clone()..) {
            let Some(rest) = k.strip_prefix(&dotted) else { break };
            items.push((self.index(name, rest)?, v));
        }
        items.sort_unstable_by_key(|(i, _)| *i);
        Ok(items.into_iter().map(|(_, v)| v).collect())
    }

    /// The elements of a list of structures: `name.1.Member`, … as one [`Params`] per index.
    pub fn structs(&self, name: &str) -> Result<Vec<Params>, ApiError> {
        let mut items: BTreeMap<u32, Params> = BTreeMap::new();
        let dotted = format!("{name}.");
        for (k, v) in self.map.range(dotted.clone()..) {
            let Some(rest) = k.strip_prefix(&dotted) else { break };
            let Some((n, member)) = rest.split_once('.') else {
                return Err(ApiError::invalid(format!(
                    "{} is a list of structures: {}{k}.MEMBER",
                    self.name(name),
                    self.prefix
                )));
            };
            let n = self.index(name, n)?;
            let element = items
                .entry(n)
                .or_insert_with(|| Params { prefix: format!("{}{name}.{n}.", self.prefix), map: BTreeMap::new() });
            element.map.insert(member.to_owned(), v.clone());
        }
        Ok(items.into_values().collect())
    }

    /// The members of a structure: `name.Member` as a [`Params`] (empty if none is given).
    pub fn structure(&self, name: &str) -> Params {
        let dotted = format!("{name}.");
        let map = self
            .map
            .range(dotted.clone()..)
            .map_while(|(k, v)| k.strip_prefix(&dotted).map(|m| (m.to_owned(), v.clone())))
            .collect();
        Params { prefix: format!("{}{dotted}", self.prefix), map }
    }

    fn index(&self, name: &str, text: &str) -> Result<u32, ApiError> {
        text.parse::<u32>()
            .ok()
            .filter(|n| *n >= 1 && text.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| ApiError::invalid(format!("{}.{text}: list indexes are 1, 2, 3, …", self.name(name))))
    }

    /// Refuses members this action does not know (`UnknownParameter`, as EC2 does), so that
    /// nothing a caller asked for is silently ignored. A member is known by its first part
    /// (`IpPermissions` covers `IpPermissions.1.FromPort`).
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        for k in self.map.keys() {
            let first = k.split('.').next().unwrap_or(k);
            if !known.contains(&first) {
                return Err(ApiError::client(
                    "UnknownParameter",
                    format!("The parameter {} is not recognized", self.name(k)),
                ));
            }
        }
        Ok(())
    }
}

/// Splits `a=1&b=2` into decoded pairs. `plus_is_space`: form encoding (a POST body, and
/// botocore's query strings) writes a space as `+`.
pub fn parse_pairs(text: &str, plus_is_space: bool) -> Result<Vec<(String, String)>, ApiError> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k, plus_is_space)?, decode(v, plus_is_space)?))
        })
        .collect()
}

/// Percent-decodes (UTF-8); malformed escapes or text are `MalformedQueryString`.
pub fn decode(text: &str, plus_is_space: bool) -> Result<String, ApiError> {
    let malformed = || ApiError::client("MalformedQueryString", format!("{text:?} is not well-formed URL encoding"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(malformed)?;
                let hex = std::str::from_utf8(hex).map_err(|_| malformed())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| malformed())?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| malformed())
}

/// Percent-encodes as SigV4's canonical form wants it: everything but `A-Z a-z 0-9 - _ . ~`.
pub fn encode_strict(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(text: &str) -> Params {
        Params::from_pairs(parse_pairs(text, true).unwrap()).unwrap()
    }

    #[test]
    fn numbered_lists_and_structures_come_out_in_index_order() {
        let p = params(
            "GroupId.2=b&GroupId.10=c&GroupId.1=a&IpPermissions.2.IpProtocol=udp&IpPermissions.1.IpProtocol=tcp\
             &IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0%2F8&IpPermissions.1.IpRanges.2.CidrIp=10.1.0.0%2F16",
        );
        assert_eq!(p.list("GroupId").unwrap(), vec!["a", "b", "c"]);
        let perms = p.structs("IpPermissions").unwrap();
        assert_eq!(perms.len(), 2);
        assert_eq!(perms[0].get("IpProtocol"), Some("tcp"));
        assert_eq!(perms[1].get("IpProtocol"), Some("udp"));
        let ranges = perms[0].structs("IpRanges").unwrap();
        assert_eq!(ranges[1].get("CidrIp"), Some("10.1.0.0/16"));
        assert_eq!(ranges[1].name("CidrIp"), "IpPermissions.1.IpRanges.2.CidrIp");
    }

    #[test]
    fn form_encoding_is_decoded() {
        let p = params("GroupDescription=web+tier%3A+%22public%22&X=%E2%9C%93");
        assert_eq!(p.get("GroupDescription"), Some("web tier: \"public\""));
        assert_eq!(p.get("X"), Some("✓"));
        assert_eq!(decode("a+b", false).unwrap(), "a+b");
        assert!(decode("%zz", true).is_err());
        assert!(decode("%e2%9c", true).is_err(), "truncated UTF-8");
    }

    #[test]
    fn repeated_and_unknown_parameters_are_refused() {
        assert!(Params::from_pairs(parse_pairs("a=1&a=2", true).unwrap()).is_err());
        let p = params("GroupName=x&Bogus.1=y");
        assert_eq!(p.only(&["GroupName"]).unwrap_err().code, "UnknownParameter");
        assert!(p.only(&["GroupName", "Bogus"]).is_ok());
        assert_eq!(params("GroupId.0=x").list("GroupId").unwrap_err().code, "InvalidParameterValue");
    }

    #[test]
    fn strict_encoding_leaves_only_unreserved_characters() {
        assert_eq!(encode_strict("a b/c~d=é"), "a%20b%2Fc~d%3D%C3%A9");
    }
}
