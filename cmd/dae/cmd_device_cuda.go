//go:build cuda

package main

import (
	"dae/gpu"
	"dae/tensor"
)

// The GPU build: --device cuda[:N] opens the CUDA device. A dae built with this tag needs the CUDA driver and a GPU
// to start at all (gorgonia.org/cu initialises the driver before main).
func init() {
	openCUDA = func(ordinal int) (tensor.Device, error) { return gpu.Open(ordinal, gpu.Options{}) }
}
