package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"dae/schema"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/minio/minio-go/v7"
)

// Object describes a stored object.
type Object struct {
	Bucket      string
	Key         string
	Size        int64
	ContentType string
	SHA256      string // hex digest of the content
}

// EnsureBuckets creates the configured buckets that do not exist yet.
func (s *Store) EnsureBuckets(ctx context.Context) error {
	for _, b := range s.cfg.Buckets() {
		ok, err := s.s3.BucketExists(ctx, b)
		if err != nil {
			return fmt.Errorf("store: bucket %s: %w", b, err)
		}
		if ok {
			continue
		}
		if err := s.s3.MakeBucket(ctx, b, minio.MakeBucketOptions{Region: s.cfg.S3Region}); err != nil {
			// Another process may have made it between our check and our call.
			if resp := minio.ToErrorResponse(err); resp.Code == "BucketAlreadyOwnedByYou" {
				continue
			}
			return fmt.Errorf("store: make bucket %s: %w", b, err)
		}
	}
	return nil
}

// PutObject stores data under key with its content type. The SHA-256 of data travels as an S3 checksum that the
// server verifies before it accepts the object. Writing the same key again replaces the object, which is what an
// idempotent job wants.
func (s *Store) PutObject(ctx context.Context, bucket, key string, data []byte, contentType string) (Object, error) {
	if err := schema.CheckObjectKey(key); err != nil {
		return Object{}, fmt.Errorf("store: put %s/%s: %w", bucket, key, err)
	}
	sum := sha256.Sum256(data)
	info, err := s.s3.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{
		ContentType: contentType,
		Checksum:    minio.ChecksumSHA256,
	})
	if err != nil {
		return Object{}, fmt.Errorf("store: put %s/%s: %w", bucket, key, err)
	}
	// A large object goes up in parts; its checksum is then one of part checksums ("…-N"), which the server has
	// verified part by part, and only a whole-object checksum can be compared with ours.
	if c := info.ChecksumSHA256; c != "" && !strings.Contains(c, "-") && c != base64.StdEncoding.EncodeToString(sum[:]) {
		return Object{}, fmt.Errorf("store: put %s/%s: server checksum %s does not match the data", bucket, key, info.ChecksumSHA256)
	}
	return Object{Bucket: bucket, Key: key, Size: info.Size, ContentType: contentType, SHA256: hex.EncodeToString(sum[:])}, nil
}

// GetObject reads the object under key whole, and checks its content against the SHA-256 checksum stored with it.
// A missing object is reported with an error that matches ErrNotFound.
func (s *Store) GetObject(ctx context.Context, bucket, key string) ([]byte, Object, error) {
	if err := schema.CheckObjectKey(key); err != nil {
		return nil, Object{}, fmt.Errorf("store: get %s/%s: %w", bucket, key, err)
	}
	obj, err := s.s3.GetObject(ctx, bucket, key, minio.GetObjectOptions{Checksum: true})
	if err != nil {
		return nil, Object{}, fmt.Errorf("store: get %s/%s: %w", bucket, key, err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, Object{}, fmt.Errorf("store: get %s/%s: %w", bucket, key, err)
	}
	info, err := obj.Stat()
	if err != nil {
		return nil, Object{}, fmt.Errorf("store: get %s/%s: %w", bucket, key, err)
	}
	sum := sha256.Sum256(data)
	// A multipart object's checksum is a checksum of part checksums ("…-N"); only a whole-object one can be compared.
	if c := info.ChecksumSHA256; c != "" && !strings.Contains(c, "-") && c != base64.StdEncoding.EncodeToString(sum[:]) {
		return nil, Object{}, fmt.Errorf("store: get %s/%s: content does not match its SHA-256 checksum", bucket, key)
	}
	return data, Object{Bucket: bucket, Key: key, Size: int64(len(data)), ContentType: info.ContentType, SHA256: hex.EncodeToString(sum[:])}, nil
}

// StatObject describes the object under key without reading it. A missing object matches ErrNotFound.
func (s *Store) StatObject(ctx context.Context, bucket, key string) (Object, error) {
	if err := schema.CheckObjectKey(key); err != nil {
		return Object{}, fmt.Errorf("store: stat %s/%s: %w", bucket, key, err)
	}
	info, err := s.s3.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			err = fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return Object{}, fmt.Errorf("store: stat %s/%s: %w", bucket, key, err)
	}
	return Object{Bucket: bucket, Key: key, Size: info.Size, ContentType: info.ContentType}, nil
}

// PresignGet returns a URL that lets its holder GET the object for the given time (1 s to 7 days) without
// credentials. It is meant for outputs shown to people.
func (s *Store) PresignGet(ctx context.Context, bucket, key string, expiry time.Duration) (*url.URL, error) {
	if err := schema.CheckObjectKey(key); err != nil {
		return nil, fmt.Errorf("store: presign %s/%s: %w", bucket, key, err)
	}
	if expiry < time.Second || expiry > 7*24*time.Hour {
		return nil, fmt.Errorf("store: presign %s/%s: expiry %v outside 1s..168h", bucket, key, expiry)
	}
	u, err := s.s3.PresignedGetObject(ctx, bucket, key, expiry, nil)
	if err != nil {
		return nil, fmt.Errorf("store: presign %s/%s: %w", bucket, key, err)
	}
	return u, nil
}

// IsNotFound reports whether err says a row or object does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsRefused reports whether err is Postgres refusing the data itself (SQLSTATE class 22, data exception, or 23,
// integrity constraint violation: a job naming a batch that does not exist, say), or the store refusing a latent
// before sending it (ErrBadLatent): sending the same rows again cannot succeed.
func IsRefused(err error) bool {
	var pe *pgconn.PgError
	return errors.Is(err, ErrBadLatent) ||
		errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}
