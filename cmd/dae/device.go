package main

import (
	"fmt"
	"strings"

	"dae/tensor"
)

// openCUDA opens the CUDA device with the given ordinal. It is nil in the default build; cmd_device_cuda.go (build
// tag cuda) sets it from its init, so that only the GPU build links the CUDA driver.
var openCUDA func(ordinal int) (tensor.Device, error)

// deviceFlagHelp documents --device for the commands that take it.
const deviceFlagHelp = `compute device: "cpu", or "cuda" / "cuda:N" (GPU N; needs the binary built with -tags cuda)`

// openDevice returns the device named by a --device flag: "cpu" (threads cores, 0 for all) or "cuda[:N]".
func openDevice(name string, threads int) (tensor.Device, error) {
	switch {
	case name == "" || name == "cpu":
		if threads < 0 {
			return nil, fmt.Errorf("%w: --threads %d: want 0 (all) or more", errUsage, threads)
		}
		return tensor.NewCPU(threads), nil
	case name == "cuda" || strings.HasPrefix(name, "cuda:"):
		ordinal := 0
		if rest, ok := strings.CutPrefix(name, "cuda:"); ok {
			if _, err := fmt.Sscanf(rest, "%d", &ordinal); err != nil || ordinal < 0 || fmt.Sprint(ordinal) != rest {
				return nil, fmt.Errorf("%w: --device %q: want cuda:N with N a GPU number", errUsage, name)
			}
		}
		if openCUDA == nil {
			return nil, fmt.Errorf("%w: --device %s: this dae was built without CUDA support (build it with -tags cuda)", errUsage, name)
		}
		d, err := openCUDA(ordinal)
		if err != nil {
			return nil, fmt.Errorf("--device %s: %w", name, err)
		}
		return d, nil
	}
	return nil, fmt.Errorf("%w: --device %q: want cpu, cuda or cuda:N", errUsage, name)
}
