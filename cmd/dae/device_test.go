package main

import (
	"errors"
	"strings"
	"testing"
)

func TestOpenDevice(t *testing.T) {
	for _, tc := range []struct {
		name    string
		threads int
		wantErr string // empty: a device
	}{
		{"cpu", 1, ""},
		{"", 1, ""},
		{"cpu", -1, "--threads"},
		{"tpu", 0, `want cpu, cuda or cuda:N`},
		{"cuda:x", 0, "cuda:N"},
		{"cuda:-1", 0, "cuda:N"},
		{"cuda:01", 0, "cuda:N"},
	} {
		d, err := openDevice(tc.name, tc.threads)
		if tc.wantErr == "" {
			if err != nil || d == nil || !strings.HasPrefix(d.Name(), "cpu") {
				t.Errorf("openDevice(%q) = %v, %v; want the CPU device", tc.name, d, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errUsage) {
			t.Errorf("openDevice(%q, %d) error = %v; want a usage error mentioning %q", tc.name, tc.threads, err, tc.wantErr)
		}
	}
	// Without the cuda tag, asking for a GPU says how to get one.
	if openCUDA == nil {
		_, err := openDevice("cuda", 0)
		if err == nil || !strings.Contains(err.Error(), "-tags cuda") {
			t.Errorf("openDevice(cuda) without CUDA support: %v", err)
		}
	}
}
