//go:build !cuda

// Command gpubench measures the CUDA device; it does something only when built with -tags cuda.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "gpubench: built without CUDA support; build it with go build -tags cuda ./gpu/gpubench")
	os.Exit(2)
}
