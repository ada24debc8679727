//go:build !cuda

package gpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCUDAParity runs the CUDA parity tests (parity_cuda_test.go) from the default build, where they can skip.
// Their test binary links gorgonia.org/cu, whose initialiser exits the process when there is no GPU, so it cannot
// decide to skip by itself: this test asks the driver first (Probe, through dlopen) and skips with the reason when
// there is no GPU. With a GPU, it runs the binary named by DAE_GPU_TEST_BINARY (as gpu/devicecheck.sh builds it) or
// builds one with `go test -c -tags cuda`, and fails if that fails.
func TestCUDAParity(t *testing.T) {
	n, err := Probe()
	if err != nil {
		t.Skipf("skipping the CUDA parity tests: %v (gpu/devicecheck.sh runs them on a GPU machine)", err)
	}
	t.Logf("%d CUDA GPU(s)", n)
	bin := os.Getenv("DAE_GPU_TEST_BINARY")
	if bin == "" {
		goTool, err := exec.LookPath("go")
		if err != nil {
			t.Fatalf("a GPU is present but there is no parity test binary: set DAE_GPU_TEST_BINARY or install Go (%v)", err)
		}
		bin = filepath.Join(t.TempDir(), "gpu-cuda.test")
		out, err := exec.Command(goTool, "test", "-c", "-tags", "cuda", "-o", bin, ".").CombinedOutput()
		if err != nil {
			t.Fatalf("building the cuda test binary: %v\n%s", err, out)
		}
	}
	cmd := exec.Command(bin, "-test.v", "-test.run", "Parity|Fixture")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("CUDA parity tests failed: %v", err)
	}
}
