// Package tensor holds dense float32 tensors, the Device interface through which every kernel of the model runs, and
// the CPU device (GEMM through OpenBLAS, element-wise and reduction kernels in vectorised C, split over the cores).
//
// It knows nothing of networks, files or queues. Layers (package nn) call a Device for every operation so that the
// same layer code runs on the CPU and on a CUDA device.
package tensor

import (
	"fmt"
	"unsafe"
)

// Tensor is a dense, row-major float32 array on a Device. A view shares its parent's storage.
type Tensor struct {
	Shape []int
	// Data is the host storage; set by host devices (CPU), nil on accelerators.
	Data []float32
	// Ptr is the device address of the first element on accelerators (0 on the CPU).
	Ptr uintptr
	// Dev is the device that owns the storage.
	Dev Device
	n   int
	// root is the tensor whose storage a view of accelerator memory shares. Holding it keeps that storage alive,
	// since an accelerator returns a tensor's memory when the tensor becomes unreachable.
	root *Tensor
}

// Len is the number of elements.
func (t *Tensor) Len() int { return t.n }

// Dim returns the size of axis i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// String describes the tensor's shape, not its contents.
func (t *Tensor) String() string { return fmt.Sprintf("tensor%v", t.Shape) }

// ShapeEq reports whether t has exactly the given shape.
func (t *Tensor) ShapeEq(shape ...int) bool {
	if len(shape) != len(t.Shape) {
		return false
	}
	for i, s := range shape {
		if t.Shape[i] != s {
			return false
		}
	}
	return true
}

// Numel is the product of the dimensions.
func Numel(shape ...int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// View returns a tensor of the given shape over elements [off, off+Numel(shape)) of t, sharing storage.
func (t *Tensor) View(off int, shape ...int) *Tensor {
	n := Numel(shape...)
	if off < 0 || off+n > t.n {
		panic(fmt.Sprintf("tensor: view [%d,%d) out of %v", off, off+n, t.Shape))
	}
	v := &Tensor{Shape: append([]int(nil), shape...), Dev: t.Dev, n: n}
	if t.Data != nil {
		v.Data = t.Data[off : off+n : off+n]
	}
	if t.Ptr != 0 {
		v.Ptr = t.Ptr + uintptr(off)*unsafe.Sizeof(float32(0))
		v.root = t
		if t.root != nil {
			v.root = t.root
		}
	}
	return v
}

// Reshape returns a view of all of t with another shape of the same size.
func (t *Tensor) Reshape(shape ...int) *Tensor {
	if Numel(shape...) != t.n {
		panic(fmt.Sprintf("tensor: reshape %v to %v", t.Shape, shape))
	}
	return t.View(0, shape...)
}

// Wrap makes a host tensor that owns data (which must hold Numel(shape) elements); its device is the CPU device d.
func Wrap(d Device, data []float32, shape ...int) *Tensor {
	n := Numel(shape...)
	if len(data) != n {
		panic(fmt.Sprintf("tensor: wrap %d values as %v", len(data), shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: data, Dev: d, n: n}
}

// NewAccel makes a tensor descriptor for an accelerator's memory; used by device implementations.
func NewAccel(d Device, ptr uintptr, shape ...int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), Ptr: ptr, Dev: d, n: Numel(shape...)}
}

// Host returns a copy of t's contents in host memory.
func (t *Tensor) Host() []float32 {
	out := make([]float32, t.n)
	t.Dev.Download(out, t)
	return out
}

// Ensure returns buf if it already has exactly the given shape, otherwise a new zeroed tensor on d. Layers keep
// their outputs and scratch in such buffers so that a steady-state step allocates nothing.
func Ensure(d Device, buf *Tensor, shape ...int) *Tensor {
	if buf != nil && buf.ShapeEq(shape...) && buf.Dev == d {
		return buf
	}
	if buf != nil && buf.Dev == d && buf.cap() >= Numel(shape...) && buf.Data != nil {
		// Reuse the storage of a larger buffer (host only; accelerators reallocate).
		n := Numel(shape...)
		return &Tensor{Shape: append([]int(nil), shape...), Data: buf.Data[:n:cap(buf.Data)], Dev: d, n: n}
	}
	return d.New(shape...)
}

func (t *Tensor) cap() int {
	if t.Data != nil {
		return cap(t.Data)
	}
	return t.n
}
