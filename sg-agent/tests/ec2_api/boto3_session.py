"""A boto3 session against sg-agent's EC2 API (SG_API_ENDPOINT): every response checked field
by field against the shapes EC2 documents, then malformed and oversized requests, after which
the server still answers and nothing changed. Prints "boto3 session: ok" on success; any
mismatch raises with the response that differed."""

import os
import sys
import urllib.request

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.exceptions

ENDPOINT = os.environ["SG_API_ENDPOINT"]
ec2 = boto3.client("ec2", endpoint_url=ENDPOINT, region_name="us-east-1")


def check(condition, what, value=None):
    if not condition:
        raise AssertionError(f"{what}: {value!r}")


def error_code(call, **kwargs):
    try:
        call(**kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError(f"{call.__name__}({kwargs}) should have failed")


def only_keys(d, allowed, what):
    extra = set(d) - set(allowed) - {"ResponseMetadata"}
    check(not extra, f"{what} has keys EC2 does not document", extra)


# --- Groups: create, describe with every documented field.
created = ec2.create_security_group(GroupName="api", Description="made by boto3")
gid = created["GroupId"]
check(gid.startswith("sg-") and len(gid) == 20, "GroupId", gid)
check(len(created["ResponseMetadata"]["RequestId"]) == 36, "requestId", created["ResponseMetadata"])
groups = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"]
check(len(groups) == 1, "one group", groups)
g = groups[0]
only_keys(g, ["Description", "GroupName", "IpPermissions", "OwnerId", "GroupId", "IpPermissionsEgress", "Tags",
              "VpcId", "SecurityGroupArn"], "SecurityGroup")
check(g["GroupName"] == "api" and g["Description"] == "made by boto3", "name/description", g)
check(g["OwnerId"] == "000000000000" and g["VpcId"].startswith("vpc-"), "owner/vpc", g)
check(g["SecurityGroupArn"] == f"arn:aws:ec2:us-east-1:000000000000:security-group/{gid}", "arn", g)
check(g["IpPermissions"] == [], "no inbound", g)
check(g["IpPermissionsEgress"] == [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                                    "Ipv6Ranges": [{"CidrIpv6": "::/0"}], "PrefixListIds": [],
                                    "UserIdGroupPairs": []}], "AWS's default egress", g["IpPermissionsEgress"])

# --- Rules: one call, every kind of peer, descriptions.
auth = ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[
    {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
     "IpRanges": [{"CidrIp": "203.0.113.0/24", "Description": "partners"}],
     "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32"}]},
    {"IpProtocol": "udp", "FromPort": 1000, "ToPort": 2000, "UserIdGroupPairs": [{"GroupId": "sg-web"}]},
    {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "PrefixListIds": [{"PrefixListId": "pl-office", "Description": "office"}]},
    {"IpProtocol": "icmp", "FromPort": 3, "ToPort": 4, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
])
check(auth["Return"] is True, "Return", auth)
rules = auth["SecurityGroupRules"]
check(len(rules) == 5, "one rule per peer", rules)
for r in rules:
    only_keys(r, ["SecurityGroupRuleId", "GroupId", "GroupOwnerId", "IsEgress", "IpProtocol", "FromPort", "ToPort",
                  "CidrIpv4", "CidrIpv6", "PrefixListId", "ReferencedGroupInfo", "Description", "Tags",
                  "SecurityGroupRuleArn"], "SecurityGroupRule")
    check(r["GroupId"] == gid and r["IsEgress"] is False and r["SecurityGroupRuleId"].startswith("sgr-"), "rule", r)
by_peer = {r.get("CidrIpv4") or r.get("CidrIpv6") or r.get("PrefixListId") or r["ReferencedGroupInfo"]["GroupId"]: r
           for r in rules}
check(by_peer["203.0.113.0/24"]["Description"] == "partners", "description", by_peer)
check(by_peer["sg-web"]["ReferencedGroupInfo"] == {"GroupId": "sg-web", "UserId": "000000000000"}, "group ref", by_peer)
check((by_peer["0.0.0.0/0"]["FromPort"], by_peer["0.0.0.0/0"]["ToPort"]) == (3, 4), "icmp type/code", by_peer)

perms = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"]
check(len(perms) == 4, "grouped by protocol and ports", perms)
https = [p for p in perms if p.get("FromPort") == 443][0]
check(https == {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "UserIdGroupPairs": [], "PrefixListIds": [],
                "IpRanges": [{"CidrIp": "203.0.113.0/24", "Description": "partners"}],
                "Ipv6Ranges": [{"CidrIpv6": "2001:db8::/32"}]}, "IpPermission", https)

# Filters.
names = lambda **kw: sorted(g["GroupName"] for g in ec2.describe_security_groups(**kw)["SecurityGroups"])
check(names(Filters=[{"Name": "ip-permission.from-port", "Values": ["1000"]}]) == ["api"], "from-port filter")
check(names(Filters=[{"Name": "group-name", "Values": ["a*"]}]) == ["api", "app"], "wildcard filter")
check(names(Filters=[{"Name": "ip-permission.group-id", "Values": ["sg-web"]}]) == ["api", "app"], "group-id filter")
check(names(Filters=[{"Name": "egress.ip-permission.protocol", "Values": ["-1"]},
                     {"Name": "description", "Values": ["made by*"]}]) == ["api"], "filters are ANDed")
check(names(GroupNames=["web", "app"]) == ["app", "web"], "by name")

# --- Modify (the id stays), descriptions, revoke by id and by permission.
v6 = by_peer["2001:db8::/32"]["SecurityGroupRuleId"]
check(ec2.modify_security_group_rules(GroupId=gid, SecurityGroupRules=[{"SecurityGroupRuleId": v6, "SecurityGroupRule": {
    "IpProtocol": "tcp", "FromPort": 8443, "ToPort": 8443, "CidrIpv6": "2001:db8:1::/48", "Description": "moved"}}])["Return"],
      "modify")
got = ec2.describe_security_group_rules(SecurityGroupRuleIds=[v6])["SecurityGroupRules"]
check(len(got) == 1 and (got[0]["FromPort"], got[0]["CidrIpv6"], got[0]["Description"]) == (8443, "2001:db8:1::/48", "moved"),
      "modified rule keeps its id", got)
ec2.update_security_group_rule_descriptions_ingress(GroupId=gid, IpPermissions=[
    {"IpProtocol": "udp", "FromPort": 1000, "ToPort": 2000, "UserIdGroupPairs": [{"GroupId": "sg-web", "Description": "web servers"}]}])
ref = by_peer["sg-web"]["SecurityGroupRuleId"]
check(ec2.describe_security_group_rules(SecurityGroupRuleIds=[ref])["SecurityGroupRules"][0]["Description"] == "web servers",
      "description updated")
revoked = ec2.revoke_security_group_ingress(GroupId=gid, SecurityGroupRuleIds=[ref])
check(revoked["Return"] is True and revoked["RevokedSecurityGroupRules"][0]["ReferencedGroupId"] == "sg-web", "revoke by id", revoked)
partial = ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=[
    {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "203.0.113.0/24"}, {"CidrIp": "192.0.2.0/24"}]}])
check(partial["UnknownIpPermissions"][0]["IpRanges"] == [{"CidrIp": "192.0.2.0/24"}], "unknown part listed", partial)
check(len(ec2.describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [gid]}])["SecurityGroupRules"]) == 5,
      "two revoked of seven")

# --- Egress, and the old top-level form.
ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                                                              "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}])
ec2.authorize_security_group_egress(GroupId=gid, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 53, "ToPort": 53,
                                                                 "IpRanges": [{"CidrIp": "10.0.0.2/32"}]}])
ec2.authorize_security_group_ingress(GroupName="api", IpProtocol="udp", FromPort=53, ToPort=53, CidrIp="10.0.0.0/16")
egress = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissionsEgress"]
check(egress == [{"IpProtocol": "tcp", "FromPort": 53, "ToPort": 53, "IpRanges": [{"CidrIp": "10.0.0.2/32"}],
                  "Ipv6Ranges": [], "PrefixListIds": [], "UserIdGroupPairs": []}], "egress replaced", egress)

# --- Managed prefix lists: versions, entries, descriptions.
pl = ec2.create_managed_prefix_list(PrefixListName="dns", MaxEntries=3, AddressFamily="IPv4",
                                    Entries=[{"Cidr": "10.0.0.2/32", "Description": "resolver"}])["PrefixList"]
only_keys(pl, ["PrefixListId", "AddressFamily", "State", "PrefixListArn", "PrefixListName", "MaxEntries", "Version", "Tags",
               "OwnerId"], "ManagedPrefixList")
check((pl["Version"], pl["State"], pl["MaxEntries"]) == (1, "create-complete", 3), "new list", pl)
plid = pl["PrefixListId"]
mod = ec2.modify_managed_prefix_list(PrefixListId=plid, CurrentVersion=1, AddEntries=[{"Cidr": "10.0.0.3/32"}],
                                     RemoveEntries=[{"Cidr": "10.0.0.2/32"}])["PrefixList"]
check(mod["Version"] == 2, "version raised", mod)
check(ec2.get_managed_prefix_list_entries(PrefixListId=plid)["Entries"] == [{"Cidr": "10.0.0.3/32"}], "entries")
check(error_code(ec2.modify_managed_prefix_list, PrefixListId=plid, CurrentVersion=1, AddEntries=[{"Cidr": "10.0.0.4/32"}])
      == ("PrefixListVersionMismatch", 400), "stale version")
lists = ec2.describe_managed_prefix_lists(Filters=[{"Name": "prefix-list-name", "Values": ["dns"]}])["PrefixLists"]
check([l["PrefixListId"] for l in lists] == [plid], "describe by name", lists)
check(ec2.delete_managed_prefix_list(PrefixListId=plid)["PrefixList"]["State"] == "delete-complete", "deleted")

# --- Network interfaces.
eni = ec2.describe_network_interfaces(NetworkInterfaceIds=["eni-remote"])["NetworkInterfaces"][0]
check(eni["Groups"] == [{"GroupId": "sg-app", "GroupName": "app"}] and eni["PrivateIpAddress"] == "10.9.0.5", "eni", eni)
check(eni["PrivateIpAddresses"] == [{"Primary": True, "PrivateIpAddress": "10.9.0.5"}] and eni["SourceDestCheck"] is True,
      "eni addresses", eni)
ec2.modify_network_interface_attribute(NetworkInterfaceId="eni-remote", Groups=["sg-app", gid])
check([g["GroupId"] for g in ec2.describe_network_interfaces(Filters=[{"Name": "group-id", "Values": [gid]}])
       ["NetworkInterfaces"][0]["Groups"]] == ["sg-app", gid], "moved into the group")
check(error_code(ec2.delete_security_group, GroupId=gid) == ("DependencyViolation", 400), "in use")
ec2.modify_network_interface_attribute(NetworkInterfaceId="eni-remote", Groups=["sg-app"])
ec2.delete_security_group(GroupId=gid)
check(error_code(ec2.describe_security_groups, GroupIds=[gid]) == ("InvalidGroup.NotFound", 400), "gone")

# --- Malformed and oversized requests, signed with the real signer: clear errors, the server
# keeps serving, nothing changes.
session = boto3.session.Session()
creds = session.get_credentials()


def raw(body, content_type="application/x-www-form-urlencoded; charset=utf-8", method="POST", query=""):
    request = botocore.awsrequest.AWSRequest(method=method, url=ENDPOINT + "/" + query, data=body,
                                             headers={"Content-Type": content_type})
    botocore.auth.SigV4Auth(creds, "ec2", "us-east-1").add_auth(request)
    prepared = request.prepare()
    data = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
    http = urllib.request.Request(prepared.url, data=data or None, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(http, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


before = ec2.describe_security_groups()["SecurityGroups"]
cases = [
    ("Action=DescribeSecurityGroups&Version=2016-11-15&GroupId.0=sg-web", 400, "InvalidParameterValue"),
    ("Action=DescribeSecurityGroups&Version=2016-11-15&GroupId.1=%zz", 400, "MalformedQueryString"),
    ("Action=LaunchRockets&Version=2016-11-15", 400, "InvalidAction"),
    ("Version=2016-11-15", 400, "MissingAction"),
    ("Action=DescribeSecurityGroups&Version=2014-01-01", 400, "InvalidParameterValue"),
    ("Action=DeleteSecurityGroup&Version=2016-11-15&GroupId=sg-web&GroupId=sg-app", 400, "InvalidParameterValue"),
    ("Action=CreateSecurityGroup&Version=2016-11-15&GroupName=x&GroupDescription=x&Colour=blue", 400, "UnknownParameter"),
    ("Action=AuthorizeSecurityGroupIngress&Version=2016-11-15&GroupId=sg-web&IpPermissions.1.IpProtocol=tcp"
     "&IpPermissions.1.FromPort=http&IpPermissions.1.ToPort=80&IpPermissions.1.IpRanges.1.CidrIp=10.0.0.0/8", 400,
     "InvalidParameterValue"),
    ("A" * (2 << 20), 413, "RequestEntityTooLarge"),
]
for body, status, code in cases:
    got_status, text = raw(body)
    check(got_status == status and f"<Code>{code}</Code>" in text and "<RequestID>" in text,
          f"{body[:80]} -> {status} {code}", (got_status, text[:300]))
got_status, text = raw('{"Action": "DescribeSecurityGroups"}', content_type="application/json")
check(got_status == 400 and "form-encoded" in text, "a JSON body", text)
got_status, text = raw("", method="GET")
check(got_status == 400 and "<Code>MissingAction</Code>" in text, "GET without parameters", text)
got_status, text = raw("", method="GET", query="?Action=DescribeSecurityGroups&Version=2016-11-15&GroupName.1=web")
check(got_status == 200 and "<groupId>sg-web</groupId>" in text and "<groupName>app</groupName>" not in text,
      "a signed GET with the parameters in its query string", text)
check(ec2.describe_security_groups()["SecurityGroups"] == before, "nothing changed")
print("boto3 session: ok")
