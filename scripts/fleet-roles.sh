#!/usr/bin/env bash
# Least-privilege etcd roles and users for sg-agent fleet mode (README, "Fleet"):
#   node:NAME    user NAME, role sg-node-NAME: read PREFIX/, read-write PREFIX/nodes/NAME/ only
#   writer:NAME  user NAME, role sg-writer:    read PREFIX/, read-write the object prefixes
#                (groups/, prefix_lists/, instances/, subnets/, network_acls/) and PREFIX/writer
#
# Usage: scripts/fleet-roles.sh PREFIX SPEC...      e.g. fleet-roles.sh /sg/v1 writer:ops node:n1 node:n2
#
# etcdctl finds the cluster and the administrator through its environment: ETCDCTL_ENDPOINTS,
# ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY, and ETCDCTL_USER=root:PASSWORD once auth is on.
# New users get no password (a TLS client certificate whose common name is the user name logs
# them in) unless SG_ROLE_PASSWORD is set, which then becomes every new user's password.
# Re-running it is harmless: existing roles, users and grants are kept.
#
# Enable auth afterwards (once): etcdctl user add root && etcdctl auth enable
# etcd 3.4 does not check permissions on compaction: any authenticated user can compact.
set -euo pipefail

if (($# < 2)); then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
prefix=${1%/}
shift
export ETCDCTL_API=3

ensure_role() {
    etcdctl role get "$1" >/dev/null 2>&1 || etcdctl role add "$1" >/dev/null
}

ensure_user() {
    if ! etcdctl user get "$1" >/dev/null 2>&1; then
        if [[ -n ${SG_ROLE_PASSWORD:-} ]]; then
            etcdctl user add "$1" --new-user-password="$SG_ROLE_PASSWORD" >/dev/null
        else
            etcdctl user add "$1" --no-password >/dev/null
        fi
    fi
    etcdctl user grant-role "$1" "$2" >/dev/null
}

for spec in "$@"; do
    kind=${spec%%:*}
    name=${spec#*:}
    if [[ $kind == "$spec" || -z $name || $name == */* ]]; then
        echo "fleet-roles: $spec: expected node:NAME or writer:NAME" >&2
        exit 2
    fi
    case $kind in
    node)
        role=sg-node-$name
        ensure_role "$role"
        etcdctl role grant-permission "$role" read "$prefix/" --prefix >/dev/null
        etcdctl role grant-permission "$role" readwrite "$prefix/nodes/$name/" --prefix >/dev/null
        ensure_user "$name" "$role"
        echo "node $name: user $name, role $role (reads $prefix/, writes $prefix/nodes/$name/)"
        ;;
    writer)
        role=sg-writer
        ensure_role "$role"
        etcdctl role grant-permission "$role" read "$prefix/" --prefix >/dev/null
        for dir in groups prefix_lists instances subnets network_acls; do
            etcdctl role grant-permission "$role" readwrite "$prefix/$dir/" --prefix >/dev/null
        done
        etcdctl role grant-permission "$role" readwrite "$prefix/writer" >/dev/null
        ensure_user "$name" "$role"
        echo "writer $name: user $name, role $role (reads $prefix/, writes the objects and $prefix/writer)"
        ;;
    *)
        echo "fleet-roles: $spec: expected node:NAME or writer:NAME" >&2
        exit 2
        ;;
    esac
done
