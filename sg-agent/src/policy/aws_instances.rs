//! `aws ec2 describe-instances` output as an instances document (SPEC §2): every network
//! interface is an instance, as EC2 enforces security groups per network interface — its id is
//! the `NetworkInterfaceId`, its groups `Groups[]`, its addresses `PrivateIpAddresses[]` and
//! `Ipv6Addresses[]`, its `SourceDestCheck`, `VpcId` and connection-tracking timeouts. None has a
//! local interface: a native entry of the same id (only `interface`, `role`, `audit`) says where
//! one is on this node (see `aws::read_instances_documents`).

use super::{
    ConntrackTimeouts, Instance, Role,
    json::{Json, Key, Problems, field, index, join},
    limits,
    native::{self, ReadInstance},
};

/// Whether a parsed document is `describe-instances` output.
pub fn is_describe_instances(json: &Json) -> bool {
    matches!(json, Json::Object(fields) if fields.iter().any(|(k, _)| k == "Reservations"))
}

const RESERVATION_KEYS: &[&str] = &["ReservationId", "OwnerId", "RequesterId", "Groups", "Instances"];

/// Every key the AWS CLI prints for an instance (botocore's `Instance` shape). Only
/// `NetworkInterfaces` matters here; the rest is accepted as printed.
const INSTANCE_KEYS: &[&str] = &[
    "Architecture",
    "BlockDeviceMappings",
    "ClientToken",
    "EbsOptimized",
    "EnaSupport",
    "Hypervisor",
    "IamInstanceProfile",
    "InstanceLifecycle",
    "ElasticGpuAssociations",
    "ElasticInferenceAcceleratorAssociations",
    "NetworkInterfaces",
    "OutpostArn",
    "RootDeviceName",
    "RootDeviceType",
    "SecurityGroups",
    "SourceDestCheck",
    "SpotInstanceRequestId",
    "SriovNetSupport",
    "StateReason",
    "Tags",
    "VirtualizationType",
    "CpuOptions",
    "CapacityBlockId",
    "CapacityReservationId",
    "CapacityReservationSpecification",
    "HibernationOptions",
    "Licenses",
    "MetadataOptions",
    "EnclaveOptions",
    "BootMode",
    "PlatformDetails",
    "UsageOperation",
    "UsageOperationUpdateTime",
    "PrivateDnsNameOptions",
    "Ipv6Address",
    "TpmSupport",
    "MaintenanceOptions",
    "CurrentInstanceBootMode",
    "NetworkPerformanceOptions",
    "Operator",
    "SecondaryInterfaces",
    "InstanceId",
    "ImageId",
    "State",
    "PrivateDnsName",
    "PublicDnsName",
    "StateTransitionReason",
    "KeyName",
    "AmiLaunchIndex",
    "ProductCodes",
    "InstanceType",
    "LaunchTime",
    "Placement",
    "KernelId",
    "RamdiskId",
    "Platform",
    "Monitoring",
    "SubnetId",
    "VpcId",
    "PrivateIpAddress",
    "PublicIpAddress",
];

/// botocore's `InstanceNetworkInterface`; `ConnectionTrackingSpecification` is the name
/// `describe-network-interfaces` uses for the same object.
const INTERFACE_KEYS: &[&str] = &[
    "Association",
    "Attachment",
    "Description",
    "Groups",
    "Ipv6Addresses",
    "MacAddress",
    "NetworkInterfaceId",
    "OwnerId",
    "PrivateDnsName",
    "PrivateIpAddress",
    "PrivateIpAddresses",
    "SourceDestCheck",
    "Status",
    "SubnetId",
    "VpcId",
    "InterfaceType",
    "Ipv4Prefixes",
    "Ipv6Prefixes",
    "ConnectionTrackingConfiguration",
    "ConnectionTrackingSpecification",
    "Operator",
];

const TIMEOUT_KEYS: &[(&str, &str)] =
    &[("TcpEstablishedTimeout", "tcp_established"), ("UdpTimeout", "udp"), ("UdpStreamTimeout", "udp_stream")];

/// The network interfaces of a `describe-instances` document, as instances without a local
/// interface.
pub fn read(p: &mut Problems, doc: &Json) -> Vec<ReadInstance> {
    let Some(top) = p.object("", doc, &["Reservations", "NextToken", "ResponseMetadata"]) else {
        return Vec::new();
    };
    if field(top, "NextToken").is_some_and(|t| matches!(t, Json::String(s) if !s.is_empty())) {
        p.warn("NextToken", "this is one page of a paginated listing: instances on later pages are missing");
    }
    let Some(reservations) = field(top, "Reservations").and_then(|v| p.array("Reservations", v, limits::INSTANCES))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (r, reservation) in reservations.iter().enumerate() {
        let rpath = index("Reservations", r);
        let Some(rfields) = p.object(&rpath, reservation, RESERVATION_KEYS) else { continue };
        let ipath = join(&rpath, "Instances");
        let Some(instances) = field(rfields, "Instances").and_then(|v| p.array(&ipath, v, limits::INSTANCES)) else {
            continue;
        };
        for (i, instance) in instances.iter().enumerate() {
            let path = index(&ipath, i);
            let Some(fields) = p.object(&path, instance, INSTANCE_KEYS) else { continue };
            let npath = join(&path, "NetworkInterfaces");
            let Some(interfaces) = field(fields, "NetworkInterfaces").and_then(|v| p.array(&npath, v, 64)) else {
                continue;
            };
            for (n, interface) in interfaces.iter().enumerate() {
                if let Some(read) = read_interface(p, &index(&npath, n), interface) {
                    out.push(read);
                }
            }
        }
    }
    out
}

fn read_interface(p: &mut Problems, path: &str, value: &Json) -> Option<ReadInstance> {
    let fields = p.object(path, value, INTERFACE_KEYS)?;
    let before = p.list.len();
    let id = native::required_id(p, path, fields, "NetworkInterfaceId");
    let vpc_id = native::optional_text(p, path, fields, "VpcId");
    let mut groups: Vec<String> = Vec::new();
    if let Some(v) = field(fields, "Groups") {
        let gpath = join(path, "Groups");
        for (j, g) in p.array(&gpath, v, limits::GROUPS_PER_INSTANCE).unwrap_or_default().iter().enumerate() {
            let epath = index(&gpath, j);
            let Some(gfields) = p.object(&epath, g, &["GroupId", "GroupName"]) else { continue };
            if let Some(id) = native::required_id(p, &epath, gfields, "GroupId")
                && !groups.contains(&id)
            {
                groups.push(id);
            }
        }
    }
    let mut addresses = Vec::new();
    for (list, key, allowed) in [
        (
            "PrivateIpAddresses",
            "PrivateIpAddress",
            &["Association", "Primary", "PrivateDnsName", "PrivateIpAddress"][..],
        ),
        ("Ipv6Addresses", "Ipv6Address", &["Ipv6Address", "IsPrimaryIpv6"][..]),
    ] {
        let Some(v) = field(fields, list) else { continue };
        let lpath = join(path, list);
        for (j, a) in p.array(&lpath, v, limits::ADDRESSES_PER_INSTANCE).unwrap_or_default().iter().enumerate() {
            let epath = index(&lpath, j);
            let Some(afields) = p.object(&epath, a, allowed) else { continue };
            let kpath = join(&epath, key);
            let Some(text) = field(afields, key).and_then(|v| p.string(&kpath, v)) else {
                p.add(&kpath, "missing");
                continue;
            };
            if let Some(addr) = native::read_instance_address(p, &kpath, text)
                && !addresses.contains(&addr)
            {
                addresses.push(addr);
            }
        }
    }
    // The primary address is also printed on its own; it is one of PrivateIpAddresses.
    if let Some(v) = field(fields, "PrivateIpAddress") {
        let kpath = join(path, "PrivateIpAddress");
        if let Some(addr) = p.string(&kpath, v).and_then(|t| native::read_instance_address(p, &kpath, t))
            && !addresses.contains(&addr)
        {
            addresses.push(addr);
        }
    }
    for key in ["Ipv4Prefixes", "Ipv6Prefixes"] {
        if field(fields, key).is_some_and(|v| matches!(v, Json::Array(items) if !items.is_empty())) {
            p.warn(
                &join(path, key),
                "delegated prefixes are not taken as the interface's addresses: traffic from addresses in them is \
                 dropped by the source/destination check",
            );
        }
    }
    let source_dest_check = match field(fields, "SourceDestCheck") {
        None => Some(true),
        Some(v) => p.boolean(&join(path, "SourceDestCheck"), v),
    };
    let mut timeouts = ConntrackTimeouts::default();
    for key in ["ConnectionTrackingConfiguration", "ConnectionTrackingSpecification"] {
        let Some(v) = field(fields, key) else { continue };
        let tpath = join(path, key);
        let names: Vec<&str> = TIMEOUT_KEYS.iter().map(|(k, _)| *k).collect();
        let Some(tfields) = p.object(&tpath, v, &names) else { continue };
        for (aws_key, native_key) in TIMEOUT_KEYS {
            let Some(v) = field(tfields, aws_key) else { continue };
            let Some((_, min, max)) = ConntrackTimeouts::RANGES.iter().find(|(k, _, _)| k == native_key) else {
                continue;
            };
            let what = format!("a timeout in seconds ({min}-{max}, EC2's range)");
            let value = p.integer(&Key(&tpath, aws_key), v, i64::from(*min), i64::from(*max), &what).map(|n| n as u32);
            match *native_key {
                "tcp_established" => timeouts.tcp_established = value,
                "udp" => timeouts.udp = value,
                _ => timeouts.udp_stream = value,
            }
        }
    }
    if p.list.len() != before {
        return None;
    }
    Some(ReadInstance {
        instance: Instance {
            id: id?,
            interface: None,
            role: Role::Workload,
            addresses,
            security_groups: groups.clone(),
            source_dest_check: source_dest_check?,
            audit: false,
            conntrack_timeouts: timeouts,
            node: None,
        },
        path: path.to_owned(),
        groups_listed: !groups.is_empty(),
        vpc_id,
        source: p.source,
        clean: true,
        keys: Vec::new(),
    })
}
