package main

import (
	"context"
	"errors"
	"strings"
	"testing"

	"dae/schema"
)

// TestJobCommandsRefuseBadArguments checks that enqueue, retry and worker reject bad command lines as usage errors,
// before they connect to anything.
func TestJobCommandsRefuseBadArguments(t *testing.T) {
	tests := []struct {
		name string
		run  func(context.Context, []string) error
		args []string
		want string
	}{
		{"enqueue nothing", runEnqueue, nil, "which job kind"},
		{"enqueue unknown kind", runEnqueue, []string{"explode", "--model", "m"}, `unknown job kind "explode"`},
		{"enqueue regenerate", runEnqueue, []string{"regenerate", "--model", "m"}, `unknown job kind "regenerate"`},
		{"encode without source", runEnqueue, []string{"encode", "--model", "m"}, "needs a SOURCE"},
		{"encode two sources", runEnqueue, []string{"encode", "a", "b"}, "unexpected arguments"},
		{"retry without flag", runRetry, []string{"b1"}, "--failed"},
		{"retry bad batch", runRetry, []string{"../x", "--failed"}, "BATCH"},
		{"retry no batch", runRetry, []string{"--failed"}, "BATCH"},
		{"worker bad kind", runWorker, []string{"--kinds", "encode,bogus"}, `unknown kind "bogus"`},
		{"worker bad device", runWorker, []string{"--device", "tpu"}, `--device "tpu"`},
		{"worker zero batch", runWorker, []string{"--batch", "0"}, "must be positive"},
		{"demo no images", runDemo, []string{"--images", "0"}, "--images"},
		{"demo compare", runDemo, []string{"--compare", "-1"}, "--compare -1"},
		{"demo arguments", runDemo, []string{"stray", "--images", "5"}, `unexpected arguments ["stray" "--images" "5"]`},
		{"up arguments", runUp, []string{"stray"}, `unexpected arguments ["stray"]`},
		{"up wait", runUp, []string{"--wait", "-1s"}, "--wait -1s"},
		{"cron list arguments", runCron, []string{"list", "stray"}, `unexpected arguments ["stray"]`},
		{"cron runs arguments", runCron, []string{"runs", "stray", "--limit", "5"}, `unexpected arguments ["stray" "--limit" "5"]`},
		{"cron runs limit", runCron, []string{"runs", "--limit", "0"}, "--limit 0: want at least 1"},
		{"cron classifiers arguments", runCron, []string{"classifiers", "--model", "m", "--attribute", "a", "stray"}, `unexpected arguments ["stray"]`},
		{"cron config arguments", runCron, []string{"config", "stray"}, `unexpected arguments ["stray"]`},
		{"worker grace", runWorker, []string{"--grace", "0s"}, "--grace 0s"},
		{"enqueue chunk", runEnqueue, []string{"encode", "src", "--model", "m", "--chunk", "0"}, "--chunk 0: want at least 1"},
		{"enqueue encode steps", runEnqueue, []string{"encode", "src", "--model", "m", "--encode-steps", "5000"}, "--encode-steps 5000: want 0..1000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(context.Background(), tt.args)
			if err == nil || !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v: error %v, want a usage error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestDefaultBatchName(t *testing.T) {
	a := defaultBatchName("some/folder", "m1")
	if err := schema.CheckName(a); err != nil {
		t.Fatalf("defaultBatchName = %q: %v", a, err)
	}
	if b := defaultBatchName("some/folder/", "m1"); b != a {
		t.Errorf("the same folder with a trailing slash gives %q, want %q", b, a)
	}
	if b := defaultBatchName("some/folder", "m2"); b == a {
		t.Errorf("another model gives the same batch %q", b)
	}
	if b := defaultBatchName("s3://bucket/p", "m1"); b == a || schema.CheckName(b) != nil {
		t.Errorf("an S3 source gives %q", b)
	}
}

func TestClassName(t *testing.T) {
	for src, want := range map[string]string{
		"/x/test_00012_Ankle_boot.png": "Ankle_boot",
		"test_00001_Bag.png":           "Bag",
		"other.png":                    "other",
	} {
		if got := className(src); got != want {
			t.Errorf("className(%q) = %q, want %q", src, got, want)
		}
	}
}
