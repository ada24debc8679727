package store

import (
	"math"
	"strings"
	"testing"
)

func TestConfigFromNamesMissingVariables(t *testing.T) {
	t.Parallel()
	_, err := configFrom(func(name string) (string, bool) {
		if name == EnvPGURL {
			return "postgres://x", true
		}
		return "", false
	})
	if err == nil {
		t.Fatal("config with three variables missing: no error")
	}
	for _, name := range []string{EnvS3Endpoint, EnvS3AccessKey, EnvS3SecretKey} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	if strings.Contains(err.Error(), EnvPGURL) {
		t.Errorf("error %q names %s, which is set", err, EnvPGURL)
	}
}

func TestFloat32sRoundTrip(t *testing.T) {
	t.Parallel()
	in := []float32{0, float32(math.Copysign(0, -1)), 1, -2.5, math.MaxFloat32, math.SmallestNonzeroFloat32,
		float32(math.Inf(1)), math.Float32frombits(0x7fc00123)}
	b := EncodeFloat32s(in)
	if len(b) != 4*len(in) || b[4] != 0 || b[7] != 0x80 { // little-endian: -0's sign bit is in the last byte
		t.Fatalf("EncodeFloat32s = % x, want little-endian float32s", b)
	}
	out, err := DecodeFloat32s(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := firstBitDiff(out, in); d != "" {
		t.Error(d)
	}
	if _, err := DecodeFloat32s(b[:5]); err == nil {
		t.Error("DecodeFloat32s accepted 5 bytes")
	}
}
