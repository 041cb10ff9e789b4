#!/usr/bin/env bash
# Installs everything sg-agent needs to build the eBPF programs and to run the
# privileged tests (fleet mode's etcd included), on a Debian 12 machine with rustup (stable +
# nightly).
#
# Idempotent: every step checks first, so a second run takes about a second.
# Needs root for apt-get and for mounting bpffs; the rest runs as the caller.
set -euo pipefail

say() { printf 'setup: %s\n' "$*" >&2; }

# --- Rust: the eBPF crate builds with a pinned nightly (`-Z build-std=core` needs its rust-src).
# Pinned, not "nightly": bpf-linker is built against Debian's LLVM 22, and the bitcode rustc
# emits must come from the same LLVM major (today's nightly uses LLVM 23 and fails to link).
EBPF_TOOLCHAIN=$(cat "$(dirname "$0")/../sg-ebpf/toolchain")
# Its rustfmt formats the whole workspace (rustfmt.toml uses nightly-only import grouping).
installed=$(rustup component list --toolchain "$EBPF_TOOLCHAIN" --installed 2>/dev/null || true)
if ! grep -q '^rust-src' <<<"$installed" || ! grep -q '^rustfmt' <<<"$installed"; then
    say "installing Rust $EBPF_TOOLCHAIN with rust-src (for the eBPF build) and rustfmt"
    rustup toolchain install "$EBPF_TOOLCHAIN" --profile minimal --component rust-src --component rustfmt >&2
fi

# --- Debian packages: LLVM 22 (for bpf-linker), bpftool, and the tools the traffic tests use
# (dnsmasq-base and busybox: a DHCP server and client; prometheus: promtool checks the metrics).
APT_PACKAGES=(llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev bpftool
              iproute2 iputils-ping netcat-openbsd nftables procps fonts-dejavu-core
              dnsmasq-base busybox prometheus)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${missing[@]}" >&2
fi

# --- Fleet mode: etcd 3.4 (server and etcdctl) for the tests, the demo and the benchmark, which
# start their own on free ports; protoc, which the etcd client crate needs at build time; openssl,
# which makes the tests' certificates. etcd-server's postinst starts a system etcd on
# 127.0.0.1:2379 (invoke-rc.d, or systemd): a policy-rc.d that exits 101 stops that, and
# whatever started anyway is stopped and disabled below. Nothing here may listen on 2379.
FLEET_PACKAGES=(etcd-server etcd-client protobuf-compiler openssl)
missing=()
for pkg in "${FLEET_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing Debian packages for fleet mode: ${missing[*]} (without starting a system etcd)"
    made_policy=""
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${missing[@]}" >&2
    if [[ -n $made_policy ]]; then rm -f /usr/sbin/policy-rc.d; fi
fi
# Debian's system etcd stays stopped and disabled (harmless when it is).
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-enabled --quiet etcd.service 2>/dev/null || systemctl is-active --quiet etcd.service 2>/dev/null; then
        say "stopping and disabling the system etcd (tests start their own on free ports)"
        systemctl disable --now etcd.service >/dev/null 2>&1 || true
    fi
elif [[ -x /etc/init.d/etcd ]] && /etc/init.d/etcd status >/dev/null 2>&1; then
    say "stopping and disabling the system etcd (tests start their own on free ports)"
    /etc/init.d/etcd stop >/dev/null 2>&1 || true
    update-rc.d etcd disable >/dev/null 2>&1 || true
fi

# --- bpf-linker, built against LLVM 22 (without LLVM_PREFIX it cannot find -lLLVM).
if ! command -v bpf-linker >/dev/null 2>&1; then
    say "building bpf-linker 0.13.0 against LLVM 22 (about a minute and a half)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --version 0.13.0 \
        --no-default-features --features llvm-22 >&2
fi

# --- bpffs: the agent pins its programs, links and maps here.
if ! mountpoint -q /sys/fs/bpf; then
    say "mounting bpffs on /sys/fs/bpf"
    mount -t bpf bpf /sys/fs/bpf
fi

# --- The AWS CLI and boto3: the EC2 API's tests drive the agent with them (sg-lab's
# AwsTools::find looks for them the same way: `aws` on PATH, and a python3 or /usr/bin/python3
# that imports boto3 and the CLI's package; else the venv below).
AWS_VENV=/opt/sg-agent-tools/aws
aws_tools_present() {
    local py
    command -v aws >/dev/null 2>&1 || return 1
    for py in python3 /usr/bin/python3; do
        "$py" -c 'import boto3, awscli.clidriver' >/dev/null 2>&1 && return 0
    done
    return 1
}
if ! aws_tools_present && ! "$AWS_VENV/bin/python3" -c 'import boto3, awscli.clidriver' >/dev/null 2>&1; then
    say "installing the AWS CLI and boto3 into $AWS_VENV (pip)"
    if ! python3 -m venv "$AWS_VENV" >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq python3-venv >&2
        python3 -m venv "$AWS_VENV"
    fi
    "$AWS_VENV/bin/pip" install -q awscli boto3 >&2
fi
