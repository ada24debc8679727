package main

import (
	"context"
	"strings"
	"testing"
)

func TestBenchCommand(t *testing.T) {
	ctx := context.Background()
	if err := runBench(ctx, []string{"--presets", "tiny", "--parts", "decoder,encoder,train", "--rounds", "2", "--seconds", "0.01", "--threads", "1", "--peak-seconds", "0.01"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--presets", "tiny", "--paths", "winograd"}, `"winograd"`},
		{[]string{"--presets", "tiny", "--parts", "sampler"}, `"sampler"`},
		{[]string{"--presets", "nope"}, "nope"},
		{[]string{"--presets", "tiny", "--rounds", "0"}, "--rounds 0"},
		{[]string{"--presets", "tiny", "--peak-seconds", "0"}, "--peak-seconds 0"},
	} {
		if err := runBench(ctx, tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}
