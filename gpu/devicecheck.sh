#!/usr/bin/env bash
# gpu/devicecheck.sh — the GPU check, in two halves so that binaries built here run on a GPU machine without Go.
#
#   gpu/devicecheck.sh build   (any machine with Go and the CUDA headers) builds into gpu/.devicecheck/:
#                              the cuda parity test binary, the benchmark, and the shared libraries they need
#                              besides libc and the CUDA driver (OpenBLAS and its runtime).
#   gpu/devicecheck.sh run     (the GPU machine, from the repository root) runs the parity tests (every kernel, every
#                              layer's forward and backward pass, the networks, training steps, the samplers and the
#                              authors' fixture, CPU against CUDA) and the benchmark: fmnist32 and ffhq128 training
#                              steps and 100-step encodes, in images/s.
#   gpu/devicecheck.sh         both, when this machine has a GPU.
#
# Carry gpu/.devicecheck (it is git-ignored) to the GPU machine along with the working tree; shared/ holds the fixture.
# BENCH_STEPS (default 10) sets the timed training steps per preset.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=gpu/.devicecheck

build() {
	mkdir -p "$out/lib"
	printf '*\n' >"$out/.gitignore"
	go test -c -tags cuda -o "$out/gpu-cuda.test" ./gpu
	go build -tags cuda -o "$out/gpubench" ./gpu/gpubench
	# Libraries the GPU machine may lack; the driver (libcuda), cuBLAS (dlopen'd from the host) and glibc stay.
	ldd "$out/gpu-cuda.test" "$out/gpubench" | awk '$3 ~ /^\// {print $3}' | sort -u |
		grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libcuda|libgcc_s|libstdc\+\+)\.so' |
		while read -r lib; do cp -L "$lib" "$out/lib/"; done
	ls -la "$out" "$out/lib"
}

run() {
	export LD_LIBRARY_PATH="$PWD/$out/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
	command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
	status=0
	(cd gpu && "../$out/gpu-cuda.test" -test.v -test.run 'Parity|Fixture' -test.timeout 15m) || status=$?
	"$out/gpubench" -steps "${BENCH_STEPS:-10}" || status=$?
	return $status
}

case "${1:-all}" in
build) build ;;
run) run ;;
all)
	build
	if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
		run
	else
		echo "devicecheck: built; no GPU here, so run 'gpu/devicecheck.sh run' on a GPU machine" >&2
	fi
	;;
*)
	echo "usage: gpu/devicecheck.sh [build|run]" >&2
	exit 2
	;;
esac
