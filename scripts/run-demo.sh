#!/usr/bin/env bash
# The main job: install what is missing, build, start vcmad on the sim backend with
# simulated VMs, and show the service at work through vcmactl: VMs' RAM lent from
# the pool, a guest's allocations vacating lent windows under running VMs,
# compaction, draining a VM, a test allocation, and the counters.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh --for demo
scripts/build.sh build

dir=$(mktemp -d /tmp/vcma-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	umount "$dir/run" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
# vcmad's runtime directory on a tmpfs, as /run is on a host: machine memory is a file
# there (vcmad(8) STATE), and on a disk its pages would be written back to the disk
mkdir "$dir/run"
mount -t tmpfs -o size=4g,mode=0755 vcma-demo "$dir/run" 2>/dev/null ||
	echo "(cannot mount a tmpfs for the runtime directory: it stays on $(stat -f -c %T "$dir"))"
sed "s|^runtime_dir = .*|runtime_dir = $dir/run|" docs/examples/vcmad.conf > "$dir/vcmad.conf"
export VCMA_SOCKET=$dir/run/vcmad.sock VCMA_CTL_SOCKET=$dir/run/vcmad-ctl.sock
ctl() {
	echo
	echo "\$ vcmactl $*"
	./build/tools/vcmactl "$@" | sed 's/^/  /'
}
sim() { # name, output file, options...
	local name=$1 out=$2
	shift 2
	./build/tools/vcma-simvm --name "$name" "$@" > "$dir/$out.txt" &
	pids+=($!)
}

echo "== vcmad (sim backend) with docs/examples/vcmad.conf =="
./build/hv/vcmad --config "$dir/vcmad.conf" 2> "$dir/vcmad.log" &
vcmad=$!
pids+=($vcmad)
for _ in $(seq 100); do [ -S "$VCMA_CTL_SOCKET" ] && break; sleep 0.05; done
[ -S "$VCMA_CTL_SOCKET" ] || { cat "$dir/vcmad.log"; exit 1; }
sed 's/^/  /' "$dir/vcmad.log"

echo
echo "== two VMs start; their RAM comes from the idle frames of pool main first"
echo "   (lend_share 100%); their vCPUs keep writing and verifying checksummed pages,"
echo "   and each reports a quarter of its pages free, as virtio-balloon would =="
sim ivi ivi --class display --ram 128M --vcpus 2 --report 25 --alloc none --duration 12
sim cluster cluster --class camera --ram 128M --vcpus 1 --report 25 --alloc 4K,1M,2M \
	--max-regions 4 --interval-ms 50 --duration 12
sleep 1
ctl status
ctl pools
ctl pool show main --width 64
ctl guests

echo
echo "== a codec VM allocates 2-8 MiB regions from pool main: each window is vacated"
echo "   under the running VMs (free pages dropped, used ones paused, copied, remapped) =="
sim rear-seat rear --class codec --ram 16M --vcpus 1 --alloc 2M,4M,8M --max-regions 3 \
	--interval-ms 20 --duration 6
sleep 3
ctl regions --pool main
ctl pool show main --width 64
ctl stats

echo
echo "== the operator's tools: draining a VM, compaction, a test allocation =="
ctl drain ivi
sleep 0.5
ctl compact main
sleep 0.5
ctl pool show main --width 64
handle=$(./build/tools/vcmactl --json alloc --pool main 16M | python3 -c 'import json,sys; print(json.load(sys.stdin)["handle"])')
ctl regions --guest vcmactl
ctl free "$handle"

echo
echo "== what each VM saw (no corruption, every region's pattern read back) =="
rc=0
for i in "${!pids[@]}"; do
	[ "${pids[$i]}" = "$vcmad" ] && continue
	wait "${pids[$i]}" || rc=1
done
for vm in ivi cluster rear; do
	echo "-- $vm"
	sed 's/^/  /' "$dir/$vm.txt"
done
ctl stats

echo
echo "== what vcmad logged =="
kill -TERM "$vcmad"
wait "$vcmad" || rc=1
pids=()
sed 's/^/  /' "$dir/vcmad.log" | tail -n +4
exit $rc
