#!/bin/sh
# mpi_pool across two "hosts": two network namespaces joined by a veth pair,
# Open MPI over TCP only (btl tcp,self), the remote daemon started through
# `ip netns exec` as the rsh agent instead of ssh. Rank 0 runs in host a, ranks
# 1 and 2 in host b, so every task and result crosses the veth link.
#
#   two_hosts.sh MPIRUN PROGRAM [ARGS...]
#
# Exit 77 (ctest: skipped) unless root with ip and unshare. The namespaces and
# the temporary directory are removed on every exit path (trap).
set -u
mpirun=$1
shift
if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
  echo "two_hosts: needs root, ip and unshare: skipped"
  exit 77
fi

tag=$$
ns_a=cpx${tag}a
ns_b=cpx${tag}b
dir=$(mktemp -d /tmp/coproc_two_hosts.XXXXXX)
cleanup() {
  ip netns del "$ns_a" 2>/dev/null
  ip netns del "$ns_b" 2>/dev/null  # the veth pair goes with its namespaces
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

set -e
ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add "${ns_a}v" type veth peer name "${ns_b}v"
ip link set "${ns_a}v" netns "$ns_a"
ip link set "${ns_b}v" netns "$ns_b"
ip -n "$ns_a" addr add 10.77.0.1/24 dev "${ns_a}v"
ip -n "$ns_b" addr add 10.77.0.2/24 dev "${ns_b}v"
for ns in "$ns_a" "$ns_b"; do
  ip -n "$ns" link set lo up
done
ip -n "$ns_a" link set "${ns_a}v" up
ip -n "$ns_b" link set "${ns_b}v" up

# Open MPI calls the agent as "AGENT HOST COMMAND...". Each host also gets its
# own hostname (a UTS namespace): both would otherwise be this machine's name,
# and Open MPI would take them for one node.
cat >"$dir/agent" <<AGENT
#!/bin/sh
host=\$1
shift
case "\$host" in
  10.77.0.2) ns=$ns_b ;;
  *) ns=$ns_a ;;
esac
exec ip netns exec "\$ns" unshare --uts sh -c "hostname \$ns; \$*"
AGENT
chmod +x "$dir/agent"
printf '10.77.0.1 slots=1\n10.77.0.2 slots=2\n' >"$dir/hosts"
set +e

run() {
  timeout 90 ip netns exec "$ns_a" unshare --uts sh -c "hostname $ns_a; exec \"\$@\"" sh \
    "$mpirun" --allow-run-as-root --oversubscribe --hostfile "$dir/hosts" -np 3 \
    --mca plm_rsh_agent "$dir/agent" --mca btl tcp,self \
    --mca btl_tcp_if_include 10.77.0.0/24 --mca oob_tcp_if_include 10.77.0.0/24 "$@"
}

# The placement itself: rank 0 in host a, ranks 1-2 in host b.
where=$(run hostname | sort | tr '\n' ' ')
echo "two_hosts: ranks run on: $where"
if [ "$where" != "$ns_a $ns_b $ns_b " ]; then
  echo "two_hosts: FAILED: expected one rank in $ns_a and two in $ns_b"
  exit 1
fi
run "$@"
