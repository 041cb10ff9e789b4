//! Hostile documents through `sg-agent check` (the same reader, validator and compiler as
//! `run` and `apply`): each gets a clear answer with bounded time and memory — never a crash,
//! a hang or unbounded growth. Needs no privileges.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "test code")]

use std::{
    fmt::Write as _,
    io::Read as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

struct Outcome {
    code: Option<i32>,
    stderr: String,
    stdout: String,
    max_rss_mib: u64,
    elapsed: Duration,
}

/// Runs `sg-agent check` on `text`, with its peak memory (from wait4) and time.
fn check(name: &str, text: &str) -> Outcome {
    let path = std::env::temp_dir().join(format!("sg-hostile-{}-{name}.json", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let started = Instant::now();
    #[expect(clippy::zombie_processes, reason = "reaped with wait4 below, which also reports its peak memory")]
    let mut child = Command::new(env!("CARGO_BIN_EXE_sg-agent"))
        .arg("check")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Drain the pipes on threads; reap with wait4 here, which also gives the peak RSS.
    let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let mut status = 0;
    // SAFETY: zeroed plain-data struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child; valid out pointers.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    let _ = std::fs::remove_file(&path);
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    Outcome {
        code: (waited == pid && libc::WIFEXITED(status)).then(|| libc::WEXITSTATUS(status)),
        stderr,
        stdout,
        max_rss_mib: usage.ru_maxrss as u64 / 1024,
        elapsed,
    }
}

/// Bounded: a generous ceiling, far above what the case needs, that a leak or a blow-up
/// would cross.
fn assert_bounded(name: &str, o: &Outcome, mib: u64) {
    eprintln!("{name}: exit {:?}, {} MiB peak, {:?}", o.code, o.max_rss_mib, o.elapsed);
    assert!(o.max_rss_mib < mib, "{name}: {} MiB", o.max_rss_mib);
    assert!(o.elapsed < Duration::from_secs(120), "{name}: {:?}", o.elapsed);
}

#[test]
fn deep_nesting_is_a_clear_error() {
    let text = "[".repeat(1_000_000);
    let o = check("deep", &text);
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("not valid JSON") && o.stderr.contains("recursion limit"), "{}", o.stderr);
    assert_bounded("deep nesting", &o, 256);
}

#[test]
fn an_oversized_document_is_refused_before_parsing() {
    let mut text = String::from("{\"instances\": [");
    let item = r#"{"id": "x", "addresses": []},"#;
    while text.len() <= sg_agent::policy::limits::DOCUMENT_BYTES {
        text.push_str(item);
    }
    let o = check("oversized", &text);
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("more than the limit"), "{}", o.stderr.lines().next().unwrap_or_default());
    assert_bounded("oversized", &o, 512);
}

#[test]
fn huge_arrays_duplicates_and_wrong_types_are_reported_not_crashed_on() {
    // A million instances: over the limit, one problem.
    let mut text = String::from("{\"instances\": [");
    for i in 0..1_000_000 {
        let _ = write!(text, "{}{{\"id\":\"i{i}\"}}", if i > 0 { "," } else { "" });
    }
    text.push_str("]}");
    let o = check("huge-array", &text);
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("instances: 1000000 items, more than the limit of 100000"), "{}", o.stderr);
    assert_bounded("huge array", &o, 1024);

    // Every key duplicated, every value the wrong type: every problem reported, output capped.
    let mut text = String::from("{\"security_groups\": [");
    for i in 0..5_000 {
        let _ = write!(
            text,
            "{}{{\"id\": {i}, \"id\": \"g\", \"ingress\": \"none\", \"egress\": {{}}, \"name\": []}}",
            if i > 0 { "," } else { "" }
        );
    }
    text.push_str("]}");
    let o = check("dup-types", &text);
    assert_eq!(o.code, Some(2));
    assert!(
        o.stderr.contains("security_groups[0].id: key appears more than once"),
        "{}",
        o.stderr.lines().next().unwrap_or_default()
    );
    assert!(o.stderr.contains("more problems"), "long reports are summarised");
    assert!(o.stderr.lines().count() <= sg_agent::policy::json::MAX_REPORTED_PROBLEMS + 1);
    assert_bounded("duplicates and wrong types", &o, 1024);
}

#[test]
fn cidrs_with_host_bits_are_errors_naming_the_network() {
    let cidrs: Vec<String> = (0..10_000).map(|i| format!("\"10.{}.{}.1/24\"", i / 256, i % 256)).collect();
    let text = format!(
        r#"{{ "security_groups": [ {{ "id": "g", "ingress": [ {{ "protocol": "tcp", "cidrs": [{}] }} ] }} ] }}"#,
        cidrs[..1000].join(",")
    );
    let o = check("host-bits", &text);
    assert_eq!(o.code, Some(2));
    assert!(o.stderr.contains("cidrs[0]: 10.0.0.1/24 has host bits set (the network is 10.0.0.0/24)"), "{}", o.stderr);
    assert_bounded("host bits", &o, 256);
}

#[test]
fn overlapping_everything_is_bounded_work() {
    // 33 nested IPv4 prefixes (/0 to /32 around one address), each with 300 distinct ports:
    // every nested prefix inherits all its ancestors' ports. Compiles or is refused for size —
    // in bounded time and memory either way.
    let mut rules = Vec::new();
    for len in 0..=32u32 {
        let net = if len == 0 { "0.0.0.0/0".to_owned() } else { format!("10.1.2.3/{len}") };
        let net = ipnet::Ipv4Net::from_str_trunc(&net);
        for p in 0..300u32 {
            let port = 1 + len * 1000 + p * 3;
            rules.push(format!(
                r#"{{ "protocol": "tcp", "from_port": {port}, "to_port": {port}, "cidrs": ["{net}"] }}"#
            ));
        }
    }
    let text = format!(
        r#"{{ "security_groups": [ {{ "id": "g", "ingress": [{}] }} ],
             "instances": [ {{ "id": "i", "interface": "eth9", "addresses": ["10.9.9.9"], "security_groups": ["g"] }} ] }}"#,
        rules.join(",")
    );
    let o = check("overlap", &text);
    assert!(o.code == Some(0) || o.stderr.contains("the datapath holds"), "{}{}", o.stdout, o.stderr);
    assert_bounded("overlapping everything", &o, 2048);
}

#[test]
fn a_hundred_thousand_rules_compile_in_bounded_time_and_memory() {
    // Five groups of 20,000 rules (the per-group limit) on one instance.
    let mut groups = Vec::new();
    for g in 0..5 {
        let rules: Vec<String> = (0..20_000)
            .map(|i| {
                let n = g * 20_000 + i;
                format!(
                    r#"{{ "protocol": "tcp", "from_port": {p}, "to_port": {p}, "cidrs": ["10.{a}.{b}.0/24"] }}"#,
                    p = 1024 + (n % 60_000),
                    a = n / 256 % 256,
                    b = n % 256
                )
            })
            .collect();
        groups.push(format!(r#"{{ "id": "g{g}", "ingress": [{}] }}"#, rules.join(",")));
    }
    let text = format!(
        r#"{{ "security_groups": [{}],
             "instances": [ {{ "id": "i", "interface": "eth9", "addresses": ["10.250.0.1"], "security_groups": ["g0","g1","g2","g3","g4"] }} ] }}"#,
        groups.join(",")
    );
    let o = check("100k", &text);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // 100,000 rules, plus each group's default egress (0.0.0.0/0 and ::/0) and `default`.
    assert!(o.stdout.contains("100013 rules"), "{}", o.stdout);
    assert_bounded("100k rules", &o, 2048);
}

trait Trunc {
    fn from_str_trunc(s: &str) -> String;
}

impl Trunc for ipnet::Ipv4Net {
    fn from_str_trunc(s: &str) -> String {
        s.parse::<ipnet::Ipv4Net>().unwrap().trunc().to_string()
    }
}
