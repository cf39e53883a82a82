#!/usr/bin/env bash
# Build optimized and run the benchmarks; each prints a table against baselines
# measured in the same run. Pass --quick for a short smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-deps.sh --for bench
scripts/build.sh build-release --buildtype=release
quick=()
[ "${1:-}" = "--quick" ] && quick=(--quick)
echo "== window search (hv/core) =="
./build-release/bench/bench-search "${quick[@]}"
echo
echo "== the durable store (hv/store): replay of 1 M records, ALLOC+FREE with and without recording =="
./build-release/bench/bench-store "${quick[@]}"
echo
echo "== ALLOC+FREE round trip (vcmad, sim backend) =="
./build-release/bench/bench-rtt "${quick[@]}"
echo
echo "== ALLOC of free / lent-free / lent-used windows: vacating (vcmad + vcma-simvm, sim backend) =="
./build-release/bench/bench-vacate "${quick[@]}"
echo
echo "== dead guests: SIGKILL to regions and lent frames back in the pool (vcmad + libvcma + vcma-simvm, sim backend) =="
python3 bench/bench-reclaim.py build-release "${quick[@]}"
echo
echo "== restart: a vcmad killed under VMs and regions takes them back (vcmad + vcma-simvm, sim backend) =="
python3 bench/bench-restart.py build-release "${quick[@]}"
echo
echo "== ALLOC+FREE from a real guest: vcma.ko in Debian's kernel under QEMU (TCG) =="
python3 bench/bench-qemu.py build-release/hv/vcmad . "${quick[@]}" || [ $? -eq 77 ]
echo
echo "== vcma on Xen (PV domU over xenbus) beside QEMU, and taking capacity back from a balloon =="
python3 bench/bench-xen.py build-release/hv/vcmad build-release/tools/vcmactl . "${quick[@]}" || [ $? -eq 77 ]
echo
echo "== taking capacity back from a virtio-mem lender in use (QEMU TCG) =="
python3 bench/bench-vmem.py build-release/hv/vcmad build-release/tools/vcmactl "${quick[@]}" || [ $? -eq 77 ]
echo "== vcma against a static carve-out, in-guest CMA and Linux alloc_contig_range() (bench/results/) =="
scripts/run-compare.sh "${quick[@]}"
