package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Stream, subject and consumer names. Jobs of every kind share one work-queue stream; a job that keeps failing is
// republished, with its reason, on the dead-letter stream, which a recorder copies into SQL.
const (
	// StreamJobs is the JetStream stream that holds pending jobs (work-queue retention).
	StreamJobs = "DAE_JOBS"
	// StreamDead is the dead-letter stream: jobs that failed for good, kept for inspection.
	StreamDead = "DAE_DEAD"

	// SubjectJobsAll matches every job subject; it is StreamJobs' subject filter.
	SubjectJobsAll = "dae.jobs.>"
	// SubjectDeadAll matches every dead-letter subject; it is StreamDead's subject filter.
	SubjectDeadAll = "dae.dead.>"

	// ConsumerDeadRecorder is the durable consumer that copies dead letters into SQL.
	ConsumerDeadRecorder = "dead-recorder"

	// MaxDeliver is how many deliveries a job that keeps failing transiently gets: on the MaxDeliver-th failed
	// delivery a worker dead-letters it.
	MaxDeliver = 5

	// MaxReceipts bounds the deliveries of a job that no worker finishes nor fails (each worker running it was
	// stopped, which releases it, or crashed, which lets its ack wait run out): a worker that receives it for the
	// MaxReceipts-th time dead-letters it instead of running it. The consumers themselves redeliver without limit,
	// so that the server never strands a job that no worker has settled.
	MaxReceipts = 4 * MaxDeliver

	// HeaderError is the NATS header that carries the failure reason on a dead letter.
	HeaderError = "Dae-Error"
)

// Subject is the subject a job of kind k is published on, e.g. "dae.jobs.encode".
func Subject(k Kind) string { return "dae.jobs." + string(k) }

// DeadSubject is the subject a dead job of kind k is republished on, e.g. "dae.dead.encode".
func DeadSubject(k Kind) string { return "dae.dead." + string(k) }

// Consumer is the durable name of the worker consumer for kind k, e.g. "workers-encode". Workers of one kind share
// it, so adding replicas spreads the work.
func Consumer(k Kind) string { return "workers-" + string(k) }

// Bucket roles; the bucket names themselves come from the environment (see store.Config).
const (
	// ImagePrefix is the key prefix of source images, addressed by content hash.
	ImagePrefix = "images/"
	// OutputPrefix is the key prefix of generated images.
	OutputPrefix = "outputs/"
	// CheckpointPrefix is the key prefix of model checkpoints.
	CheckpointPrefix = "checkpoints/"
)

// ImageKey is the object key of the source image with the given SHA-256 content hash:
// "images/ab/abcdef…" (the two-character fan-out keeps listings short).
func ImageKey(hash string) (string, error) {
	if err := CheckHash(hash); err != nil {
		return "", fmt.Errorf("schema: image key: %w", err)
	}
	return ImagePrefix + hash[:2] + "/" + hash, nil
}

// OutputKey is the object key of an output of kind k made by the job with the given dedup key:
// "outputs/<kind>/<sha256 of dedup key>.<ext>". Hashing the dedup key makes the key safe whatever the key holds and
// makes a redelivered job overwrite its own output instead of adding another.
func OutputKey(k Kind, dedupKey, ext string) (string, error) {
	if !k.Valid() {
		return "", fmt.Errorf("schema: output key: unknown kind %q", k)
	}
	if dedupKey == "" {
		return "", fmt.Errorf("schema: output key: empty dedup key")
	}
	switch ext {
	case "png", "json", "bin":
	default:
		return "", fmt.Errorf("schema: output key: extension %q not one of png, json, bin", ext)
	}
	sum := sha256.Sum256([]byte(dedupKey))
	return OutputPrefix + string(k) + "/" + hex.EncodeToString(sum[:]) + "." + ext, nil
}

// CheckpointKey is the object key of a model's checkpoint: "checkpoints/<model>.safetensors".
func CheckpointKey(model string) (string, error) {
	if err := CheckName(model); err != nil {
		return "", fmt.Errorf("schema: checkpoint key: model: %w", err)
	}
	return CheckpointPrefix + model + ".safetensors", nil
}

// CheckHash reports whether s is a SHA-256 digest in lower-case hex, the only form of content hash we store.
func CheckHash(s string) error {
	if len(s) != 64 {
		return fmt.Errorf("hash %q: want 64 hex digits, have %d characters", clip(s), len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("hash %q: character %d is not a lower-case hex digit", clip(s), i)
		}
	}
	return nil
}

// MaxNameLen is the longest name CheckName accepts.
const MaxNameLen = 64

// CheckName reports whether s is a safe name for a model, batch, attribute or saved query: 1 to 64 characters of
// a-z, 0-9, '.', '_' and '-', starting with a letter or digit. Such a name can sit in an object key, a subject or a
// SQL value without escaping, and cannot climb out of a key prefix.
func CheckName(s string) error { return checkName(s, MaxNameLen) }

func checkName(s string, max int) error {
	if s == "" {
		return fmt.Errorf("name is empty")
	}
	if len(s) > max {
		return fmt.Errorf("name %q: longer than %d characters", clip(s), max)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')
		if !ok {
			return fmt.Errorf("name %q: character %d (%q) not allowed (want a-z 0-9 . _ -, starting with a-z or 0-9)", clip(s), i, c)
		}
	}
	if strings.Contains(s, "..") {
		return fmt.Errorf("name %q: contains \"..\"", clip(s))
	}
	return nil
}

// MaxKeyLen is the longest object key CheckObjectKey accepts.
const MaxKeyLen = 512

// CheckObjectKey reports whether key is an object key this system could have built: segments that are safe names,
// separated by single slashes, under one of the known prefixes. The store refuses any other key, so a key taken
// from a message or a database row cannot point elsewhere.
func CheckObjectKey(key string) error {
	if len(key) > MaxKeyLen {
		return fmt.Errorf("object key %q: longer than %d characters", clip(key), MaxKeyLen)
	}
	if !strings.HasPrefix(key, ImagePrefix) && !strings.HasPrefix(key, OutputPrefix) && !strings.HasPrefix(key, CheckpointPrefix) {
		return fmt.Errorf("object key %q: not under %s, %s or %s", clip(key), ImagePrefix, OutputPrefix, CheckpointPrefix)
	}
	for i, seg := range strings.Split(key, "/") {
		// A segment may be longer than a name: a 64-digit hash plus an extension.
		if err := checkName(seg, 128); err != nil {
			return fmt.Errorf("object key %q: segment %d: %w", clip(key), i, err)
		}
	}
	return nil
}

// clip shortens s for an error message, so a huge bad input does not flood the log.
func clip(s string) string {
	const n = 80
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
