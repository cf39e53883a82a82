#!/usr/bin/env bash
# The main job: install what is missing, build, start vcmad on the sim backend and
# let three simulated VMs use it at once; print what each saw and what vcmad logged.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh
[ -d build ] || meson setup build >/dev/null
meson compile -C build >/dev/null

dir=$(mktemp -d /tmp/vcma-demo.XXXXXX)
trap 'kill "$vcmad" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT
sed "s|^runtime_dir = .*|runtime_dir = $dir/run|" docs/examples/vcmad.conf > "$dir/vcmad.conf"

echo "== vcmad (sim backend) with docs/examples/vcmad.conf =="
./build/hv/vcmad --config "$dir/vcmad.conf" 2> "$dir/vcmad.log" &
vcmad=$!
for _ in $(seq 100); do [ -S "$dir/run/vcmad.sock" ] && break; sleep 0.05; done
[ -S "$dir/run/vcmad.sock" ] || { cat "$dir/vcmad.log"; exit 1; }
sed 's/^/  /' "$dir/vcmad.log"

echo
echo "== three simulated VMs for 5 s: vCPUs write and verify checksummed RAM while"
echo "   their drivers allocate 1-8 MiB regions and write/verify DMA patterns =="
sim=(./build/tools/vcma-simvm --socket "$dir/run/vcmad.sock" --duration 5)
"${sim[@]}" --name ivi --class display --ram 128M --vcpus 2 --alloc 1M,2M,4M,8M --max-regions 6 > "$dir/ivi.txt" &
a=$!
"${sim[@]}" --name cluster --class camera --ram 64M --vcpus 1 --alloc 4K,1M,2M --max-regions 4 > "$dir/cluster.txt" &
b=$!
"${sim[@]}" --name rear-seat --class codec --ram 64M --vcpus 1 --alloc 4K,2M,8M --max-regions 8 > "$dir/rear.txt" &
c=$!
rc=0
wait $a || rc=1
wait $b || rc=1
wait $c || rc=1
for vm in ivi cluster rear; do
	echo "-- $vm"
	sed 's/^/  /' "$dir/$vm.txt"
done

echo
echo "== what vcmad logged =="
kill -TERM "$vcmad"
wait "$vcmad" || rc=1
sed 's/^/  /' "$dir/vcmad.log" | tail -n +4
exit $rc
