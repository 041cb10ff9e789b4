//! Fleet mode's writers against a real etcd (SPEC §8), no root needed: `fleet apply` writes one
//! key per object and never leaves the store invalid — not after a refused document, not
//! between the transactions of a large one, not when two writers race — within etcd's limits;
//! `fleet export` reads it back; TLS with a wrong certificate is refused with a clear error;
//! the least-privilege roles of `scripts/fleet-roles.sh` hold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use sg_agent::store::{
    self, Layout, StoreError, StoreOptions,
    content::Content,
    write::{self, Limits, Plan},
};
use sg_lab::etcd::{self, Etcd, Options, TempDir, Tls};

const PREFIX: &str = "/sg/v1/";

const DOC: &str = r#"{
  "security_groups": [
    { "id": "sg-db", "ingress": [ { "protocol": "tcp", "from_port": 5432, "to_port": 5432, "groups": ["sg-app"] } ] },
    { "id": "sg-app" }
  ],
  "instances": [
    { "id": "db", "node": "n1", "interface": "veth-db", "addresses": ["10.0.1.10"], "security_groups": ["sg-db"] },
    { "id": "app", "node": "n2", "interface": "veth-app", "addresses": ["10.0.2.10"], "security_groups": ["sg-app"] }
  ] }"#;

fn sg_agent(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sg-agent"));
    cmd.args(args).env_remove("SG_STORE_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running sg-agent")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(out.status.success(), "sg-agent failed ({}):\n{}", out.status, text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn file(dir: &TempDir, name: &str, content: &str) -> PathBuf {
    let path = dir.path.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The store's objects as of `revision` (0: now), as agents would read them.
fn content_at(etcd: &Etcd, revision: i64) -> Content {
    let layout = Layout::new(PREFIX);
    let mut content = Content::default();
    for (key, value) in etcd.get_prefix_at(PREFIX, revision) {
        content.put_key(&layout, &key, value.as_bytes(), 1);
    }
    content
}

/// Every revision from `from` to now holds a valid document.
#[track_caller]
fn every_revision_valid(etcd: &Etcd, from: i64) {
    let layout = Layout::new(PREFIX);
    for revision in from..=etcd.revision() {
        if let Err(e) = content_at(etcd, revision).validate(&layout) {
            panic!("the store at revision {revision} is not a valid document:\n{e}");
        }
    }
}

/// A document with its objects in id order (the store keeps them in key order).
fn document(text: &str) -> sg_agent::policy::Document {
    let mut doc = sg_agent::policy::native::parse_document(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    doc.security_groups.sort_by(|a, b| a.id.cmp(&b.id));
    doc.prefix_lists.sort_by(|a, b| a.id.cmp(&b.id));
    doc.instances.sort_by(|a, b| a.id.cmp(&b.id));
    doc
}

#[test]
fn apply_writes_one_key_per_object_and_export_reads_the_document_back() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let url = etcd.url();
    let dir = TempDir::new("docs");
    let doc = file(&dir, "doc.json", DOC);
    let out = ok(sg_agent(&["fleet", "apply", s(&doc), "--store", &url], &[]));
    assert!(out.contains("4 added, 0 changed, 0 deleted in 1 transaction"), "{out}");
    let keys: Vec<String> = etcd.get_prefix(PREFIX).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        ["/sg/v1/groups/sg-app", "/sg/v1/groups/sg-db", "/sg/v1/instances/app", "/sg/v1/instances/db", "/sg/v1/writer"]
    );
    let db = etcd.get_prefix("/sg/v1/instances/db").remove(0).1;
    assert_eq!(
        db,
        r#"{"id":"db","node":"n1","interface":"veth-db","addresses":["10.0.1.10"],"security_groups":["sg-db"]}"#
    );
    let exported = ok(sg_agent(&["fleet", "export", "--store", &url], &[]));
    assert_eq!(document(&exported), document(DOC));

    // The same again writes nothing.
    let revision = etcd.revision();
    let out = ok(sg_agent(&["fleet", "apply", s(&doc), "--store", &url], &[]));
    assert!(out.contains("nothing written"), "{out}");
    assert_eq!(etcd.revision(), revision);

    // A file with only what changes: merged with the store.
    let other = file(
        &dir,
        "other.json",
        r#"{ "instances": [ { "id": "other", "addresses": ["10.0.3.10"], "security_groups": ["sg-app"] } ] }"#,
    );
    let out = ok(sg_agent(&["fleet", "apply", s(&other), "--store", &url], &[]));
    assert!(out.contains("1 added, 0 changed, 0 deleted"), "{out}");
    assert_eq!(document(&ok(sg_agent(&["fleet", "export", "--store", &url], &[]))).instances.len(), 3);

    // --prune: the file is the whole document.
    let out = ok(sg_agent(&["fleet", "apply", s(&doc), "--prune", "--store", &url], &[]));
    assert!(out.contains("0 added, 0 changed, 1 deleted"), "{out}");
    assert_eq!(document(&ok(sg_agent(&["fleet", "export", "--store", &url], &[]))), document(DOC));
}

#[test]
fn a_document_the_store_would_not_accept_writes_nothing_and_names_keys() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let url = etcd.url();
    let dir = TempDir::new("docs");
    ok(sg_agent(&["fleet", "apply", s(&file(&dir, "doc.json", DOC)), "--store", &url], &[]));
    let revision = etcd.revision();
    let cases: [(&str, &[&str], &str); 4] = [
        (
            r#"{ "instances": [ { "id": "x", "addresses": ["10.0.9.9"], "security_groups": ["sg-missing"] } ] }"#,
            &[],
            r#"/sg/v1/instances/x: security_groups[0]: unknown security group "sg-missing""#,
        ),
        (
            // Taken alone it is valid; with the store's db it claims db's address.
            r#"{ "instances": [ { "id": "x", "addresses": ["10.0.1.10"] } ] }"#,
            &[],
            "/sg/v1/instances/x: addresses[0]: 10.0.1.10 already belongs to /sg/v1/instances/db",
        ),
        (
            // Pruning sg-app would leave sg-db's rule and app referencing a group that is gone.
            r#"{ "security_groups": [ { "id": "sg-db", "ingress": [ { "protocol": "tcp", "groups": ["sg-app"] } ] } ] }"#,
            &["--prune"],
            r#"/sg/v1/groups/sg-db: ingress[0].groups[0]: unknown security group "sg-app""#,
        ),
        (
            r#"{ "instances": [ { "id": "y", "interface": "eth0", "addresses": ["10.0.9.8"] } ] }"#,
            &[],
            "/sg/v1/instances/y: an instance with an interface must name its node",
        ),
    ];
    for (i, (doc, flags, expected)) in cases.iter().enumerate() {
        let path = file(&dir, &format!("bad{i}.json"), doc);
        let mut args = vec!["fleet", "apply", s(&path), "--store", &url];
        args.extend_from_slice(flags);
        let out = sg_agent(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let message = text(&out);
        assert!(message.contains("would not be a valid document; nothing was written"), "{message}");
        assert!(message.contains(expected), "expected {expected:?} in:\n{message}");
        assert_eq!(etcd.revision(), revision, "nothing written");
    }
    // A file that is not a document of objects is named as a file.
    let path = file(&dir, "shape.json", r#"{ "instance": [] }"#);
    let out = sg_agent(&["fleet", "apply", s(&path), "--store", &url], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("shape.json: instance: unknown key"), "{}", text(&out));
    assert_eq!(etcd.revision(), revision);
}

fn many(n: usize, groups: &[&str], shift: usize) -> String {
    let instances: Vec<String> = (0..n)
        .map(|i| {
            let a = i + shift;
            format!(
                r#"{{"id":"i-{i}","node":"n{}","addresses":["10.1.{}.{}"],"security_groups":["{}"]}}"#,
                i % 3,
                a / 200,
                a % 200 + 1,
                groups[i % groups.len()]
            )
        })
        .collect();
    let group_objects: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let next = groups[(i + 1) % groups.len()];
            format!(
                r#"{{"id":"{g}","ingress":[{{"protocol":"tcp","from_port":443,"to_port":443,"groups":["{next}"]}}]}}"#
            )
        })
        .collect();
    format!(r#"{{"security_groups":[{}],"instances":[{}]}}"#, group_objects.join(","), instances.join(","))
}

#[test]
fn large_documents_are_cut_into_transactions_within_limits_each_leaving_a_valid_document() {
    if !etcd::available() {
        return;
    }
    // An etcd with small limits, so that a few hundred objects need many transactions.
    let etcd =
        Etcd::cluster(1, Options::default().with_flags(&["--max-txn-ops", "16", "--max-request-bytes", "65536"]));
    let url = etcd.url();
    let dir = TempDir::new("docs");
    let first = file(&dir, "first.json", &many(300, &["sg-a", "sg-b", "sg-c"], 0));
    let start = etcd.revision();

    // With etcd's default limits assumed, the first transaction is refused: nothing is written.
    let out = sg_agent(&["fleet", "apply", s(&first), "--store", &url], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("too many operations in txn request"), "{}", text(&out));
    assert_eq!(etcd.revision(), start);

    let limits = ["--max-txn-ops", "16", "--max-request-bytes", "65536"];
    let mut args = vec!["fleet", "apply", s(&first), "--store", &url];
    args.extend_from_slice(&limits);
    let out = ok(sg_agent(&args, &[]));
    assert!(out.contains("303 added, 0 changed, 0 deleted in "), "{out}");
    assert!(etcd.revision() >= start + 21, "15 objects per transaction at most (and the guard): {out}");
    // Now every instance takes its neighbour's address (the last one's is freed by a
    // deletion), groups change, new ones appear, some objects go: valid in the end, and after
    // every transaction.
    let second = file(&dir, "second.json", &many(250, &["sg-b", "sg-d", "sg-e", "sg-a"], 1));
    let mut args = vec!["fleet", "apply", s(&second), "--prune", "--store", &url];
    args.extend_from_slice(&limits);
    let from = etcd.revision();
    let out = ok(sg_agent(&args, &[]));
    assert!(out.contains("added") && out.contains("transactions"), "{out}");
    every_revision_valid(&etcd, start + 1);
    assert!(etcd.revision() > from + 5, "written in several transactions");
    let layout = Layout::new(PREFIX);
    let expected = Content::of_document(&std::fs::read_to_string(&second).unwrap()).unwrap();
    assert!(content_at(&etcd, 0).without_unknown().same_values(&expected), "the store holds the second document");
    content_at(&etcd, 0).validate(&layout).unwrap();
}

fn options(etcd: &Etcd) -> StoreOptions {
    StoreOptions {
        members: StoreOptions::members_of(&etcd.url()).unwrap(),
        layout: Layout::new(PREFIX),
        tls: None,
        user: None,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn a_writer_stops_when_another_wrote_between_its_transactions() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let url = etcd.url();
    let dir = TempDir::new("docs");
    ok(sg_agent(&["fleet", "apply", s(&file(&dir, "doc.json", DOC)), "--store", &url], &[]));
    let other = file(&dir, "other.json", r#"{ "instances": [ { "id": "other", "addresses": ["10.0.3.10"] } ] }"#);
    let options = options(&etcd);
    let layout = options.layout.clone();
    runtime().block_on(async {
        let mut client = options.connect().await.unwrap();
        let base = store::snapshot(&client, &layout, false).await.unwrap();
        let mine = Content::of_document(&many(20, &["sg-app"], 0)).unwrap();
        let target = write::merge(&base.content, &mine, false);
        let plan = write::plan(&layout, &base.content, &target, Limits { ops: 8, bytes: 1 << 20 }).unwrap();
        assert!(plan.transactions.len() >= 3);

        // Another writer between reading and the first transaction: nothing is written.
        let before = etcd.revision();
        ok(sg_agent(&["fleet", "apply", s(&other), "--store", &url], &[]));
        let e = write::execute(&mut client, &options, &base, &plan).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
        assert!(e.to_string().contains("0 of 3 transactions were written"), "{e}");
        assert_eq!(etcd.revision(), before + 1, "only the other writer's transaction");

        // Between two transactions: the second is refused.
        let base = store::snapshot(&client, &layout, false).await.unwrap();
        let target = write::merge(&base.content, &mine, false);
        let plan = write::plan(&layout, &base.content, &target, Limits { ops: 8, bytes: 1 << 20 }).unwrap();
        let (first, rest) = plan.transactions.split_at(1);
        let one = Plan { transactions: first.to_vec(), ..Plan::default() };
        let written = write::execute(&mut client, &options, &base, &one).await.unwrap();
        ok(sg_agent(
            &[
                "fleet",
                "apply",
                s(&file(&dir, "third.json", r#"{ "security_groups": [ { "id": "sg-x" } ] }"#)),
                "--store",
                &url,
            ],
            &[],
        ));
        let after_first = store::Snapshot {
            revision: written.revision,
            writer_revision: written.revision,
            content: Content::default(),
        };
        let rest = Plan { transactions: rest.to_vec(), ..Plan::default() };
        let e = write::execute(&mut client, &options, &after_first, &rest).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e}");
    });
    every_revision_valid(&etcd, 2);
}

#[test]
fn racing_writers_never_leave_an_invalid_document() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let url = etcd.url();
    let dir = TempDir::new("docs");
    // Both move the same addresses around (each valid alone, in many small transactions):
    // interleaved without the guard, two instances would hold one address.
    let a = file(&dir, "a.json", &many(120, &["sg-a", "sg-b"], 0));
    let b = file(&dir, "b.json", &many(120, &["sg-b", "sg-a"], 7));
    let c = file(&dir, "c.json", &many(120, &["sg-a", "sg-b"], 3));
    let start = etcd.revision();
    let (mut won, mut lost) = (0, 0);
    for _ in 0..6 {
        // From a third document each time, so that both racers have something to write.
        ok(sg_agent(&["fleet", "apply", s(&c), "--store", &url], &[]));
        let spawn = |doc: &Path| {
            Command::new(env!("CARGO_BIN_EXE_sg-agent"))
                .args(["fleet", "apply", s(doc), "--store", &url, "--max-txn-ops", "5"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (pa, pb) = (spawn(&a), spawn(&b));
        for out in [pa.wait_with_output().unwrap(), pb.wait_with_output().unwrap()] {
            if out.status.success() {
                won += 1;
            } else {
                assert!(text(&out).contains("the store changed since revision"), "{}", text(&out));
                lost += 1;
            }
        }
    }
    eprintln!("racing writers: {won} applies won, {lost} stopped by the guard");
    assert!(won >= 6, "at least one writer wins each race ({won} won, {lost} lost)");
    every_revision_valid(&etcd, start + 1);
}

#[test]
fn tls_with_a_wrong_certificate_is_refused_with_a_clear_error() {
    if !etcd::available() {
        return;
    }
    let tls = Tls::new(&[]);
    let etcd = Etcd::cluster(1, Options::default().with_tls(&tls));
    let url = etcd.url();
    let dir = TempDir::new("docs");
    let doc = file(&dir, "doc.json", DOC);
    let (cert, key) = tls.client("ops");
    let ca = tls.ca.display().to_string();
    let good = ["--store-ca", &ca, "--store-cert", s(&cert), "--store-key", s(&key)];
    let with = |flags: &[&str]| {
        let mut args = vec!["fleet", "apply", s(&doc), "--store", &url];
        args.extend_from_slice(flags);
        sg_agent(&args, &[])
    };
    let start = etcd.revision();

    // A client certificate from a CA the server does not trust.
    let (rogue_cert, rogue_key, rogue_ca) = tls.rogue_client("ops");
    let out = with(&["--store-ca", &ca, "--store-cert", s(&rogue_cert), "--store-key", s(&rogue_key)]);
    assert_eq!(out.status.code(), Some(1));
    let message = text(&out);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.contains("does not accept the client certificate"), "{message}");
    assert!(etcd.members[0].log_text().contains("certificate signed by unknown authority"));

    // A server certificate the client's CA did not sign.
    let out = with(&["--store-ca", s(&rogue_ca), "--store-cert", s(&cert), "--store-key", s(&key)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not signed by the CA given with --store-ca"), "{}", text(&out));

    // No certificate at all, and no TLS at all.
    let out = with(&["--store-ca", &ca]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("client certificate"), "{}", text(&out));
    let out = with(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("TLS"), "{}", text(&out));

    // A missing file is named before anything is attempted.
    let out = with(&["--store-ca", "/nonexistent/ca.crt"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("reading /nonexistent/ca.crt"), "{}", text(&out));
    assert_eq!(etcd.revision(), start, "nothing was written");

    let out = ok(with(&good));
    assert!(out.contains("4 added"), "{out}");
    let exported = ok(sg_agent(
        &["fleet", "export", "--store", &url, "--store-ca", &ca, "--store-cert", s(&cert), "--store-key", s(&key)],
        &[],
    ));
    assert_eq!(document(&exported), document(DOC));
}

#[test]
fn least_privilege_roles_agents_write_only_their_own_record() {
    if !etcd::available() {
        return;
    }
    let etcd = Etcd::start();
    let url = etcd.url();
    let endpoint = etcd.members[0].client_url.clone();
    let roles = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fleet-roles.sh"))
        .args(["/sg/v1", "writer:ops", "node:n1", "node:n2"])
        .env("ETCDCTL_ENDPOINTS", &endpoint)
        .env("SG_ROLE_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(roles.status.success(), "{}", text(&roles));
    etcd.ctl_ok(&["user", "add", "root", "--new-user-password=rootpw"]);
    etcd.ctl_ok(&["auth", "enable"]);

    let dir = TempDir::new("docs");
    let doc = file(&dir, "doc.json", DOC);
    let pw = [("SG_STORE_PASSWORD", "pw")];
    // The writer writes objects.
    ok(sg_agent(&["fleet", "apply", s(&doc), "--store", &url, "--store-user", "ops"], &pw));
    // A node cannot.
    let other = file(&dir, "other.json", r#"{ "instances": [ { "id": "x", "addresses": ["10.0.9.9"] } ] }"#);
    let out = sg_agent(&["fleet", "apply", s(&other), "--store", &url, "--store-user", "n1"], &pw);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("permission denied"), "{}", text(&out));
    // A node reads the fleet and writes its own record only.
    ok(sg_agent(&["fleet", "export", "--store", &url, "--store-user", "n1"], &pw));
    assert!(etcd.ctl_as("n1:pw", &["put", "/sg/v1/nodes/n1/state", "{}"]).status.success());
    for key in ["/sg/v1/nodes/n2/state", "/sg/v1/groups/sg-x", "/sg/v1/writer"] {
        let out = etcd.ctl_as("n1:pw", &["put", key, "{}"]);
        assert!(!out.status.success() && text(&out).contains("permission denied"), "n1 wrote {key}: {}", text(&out));
    }
    // The writer cannot pose as a node.
    assert!(!etcd.ctl_as("ops:pw", &["put", "/sg/v1/nodes/n1/state", "{}"]).status.success());
    // Wrong password, and none.
    let out = sg_agent(&["fleet", "status", "--store", &url, "--store-user", "n1"], &[("SG_STORE_PASSWORD", "nope")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("authentication failed"), "{}", text(&out));
    let out = sg_agent(&["fleet", "status", "--store", &url, "--store-user", "n1"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("SG_STORE_PASSWORD"), "{}", text(&out));
    // As documented: etcd 3.4 does not check permissions on compaction.
    let out = etcd.ctl_as("root:rootpw", &["get", "/sg-lab/revision-probe", "-w", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let revision = json["header"]["revision"].to_string();
    assert!(etcd.ctl_as("n1:pw", &["compaction", &revision]).status.success());
}
