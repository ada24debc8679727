// Package gpu implements tensor.Device on NVIDIA GPUs, so that every layer, the trainer and the samplers run there
// unchanged.
//
// The device itself (device_cuda.go) is built only with the build tag `cuda`: it talks to the CUDA driver through
// gorgonia.org/cu, whose package initialiser calls cuInit and exits the process when no GPU is present, so nothing in
// the default build may import it. Everything that does not need the driver is built without the tag and tested on
// any machine:
//
//   - kernels.cu, compiled to PTX by `go generate` (nvcc, compute capability 7.0, which the driver JIT-compiles
//     forward for newer GPUs) and embedded; the PTX is committed, so building needs only the CUDA headers;
//   - the kernel table: every kernel's parameter list, checked against the PTX, and which kernels implement each
//     tensor.Device method (a test fails when a method of the interface has no entry);
//   - the launch geometry, the argument packing, and the size-keyed caching allocator;
//   - the run-time loader of cuBLAS (dlopen of libcublas.so.13, .12 or .11), so that one binary runs on hosts with
//     different CUDA versions; without cuBLAS the device multiplies with its own tiled kernel;
//   - Probe, which asks the driver (loaded with dlopen, not linked) how many GPUs there are.
//
// Tests that need a GPU: the parity tests (parity_cuda_test.go, tag cuda) run every layer's forward and backward
// pass, the networks and the samplers on the CPU and CUDA devices and compare them. Their test binary links
// gorgonia.org/cu and so cannot start without a GPU; the untagged TestCUDAParity probes for a GPU first and skips
// with a message when there is none, or runs that binary when there is (see gpu_test.go). gpu/devicecheck.sh builds
// the binaries on a machine without a GPU and runs them on one that has it.
package gpu

//go:generate nvcc -ptx -arch=compute_70 -O3 -o kernels.ptx kernels.cu
