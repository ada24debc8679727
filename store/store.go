package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrNotFound is wrapped by lookups that find no row or object.
var ErrNotFound = errors.New("not found")

// Store holds the Postgres pool and the S3 client. It is safe for concurrent use.
type Store struct {
	cfg  Config
	pool *pgxpool.Pool
	s3   *minio.Client
}

// Open connects to Postgres and prepares the S3 client, and checks that both answer.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.PGURL)
	if err != nil {
		// pgx's parse error may quote the URL, password included; say only what is wrong.
		return nil, fmt.Errorf("store: %s is not a valid Postgres URL", EnvPGURL)
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("store: postgres pool for %s:%d: %w", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, err)
	}
	s3, err := minio.New(cfg.S3Endpoint, &minio.Options{
		Creds:           credentials.NewStaticV4(cfg.S3AccessKey, cfg.S3SecretKey, ""),
		Secure:          cfg.S3Secure,
		Region:          cfg.S3Region,
		TrailingHeaders: true, // lets PutObject send a SHA-256 checksum the server verifies
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("store: s3 client for %s: %w", cfg.S3Endpoint, err)
	}
	s := &Store{cfg: cfg, pool: pool, s3: s3}
	if err := s.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the pool's connections.
func (s *Store) Close() { s.pool.Close() }

// Config returns the configuration the store was opened with.
func (s *Store) Config() Config { return s.cfg }

// Ping checks that Postgres and the object store answer (and that the S3 credentials are accepted).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		c := s.pool.Config().ConnConfig
		return fmt.Errorf("store: postgres at %s:%d: %w", c.Host, c.Port, err)
	}
	if _, err := s.s3.ListBuckets(ctx); err != nil {
		return fmt.Errorf("store: s3 at %s: %w", s.cfg.S3Endpoint, err)
	}
	return nil
}

// ProbeWrites checks that Postgres and the object store accept writes, which Ping does not: a read-only Postgres
// (a standby, or default_transaction_read_only) and an object store that has lost its write quorum answer pings
// and refuse every job's writes. Postgres is asked whether it is read-only (in recovery, or read-only
// transactions by default), which needs no privilege; the object store to store and delete a small object under
// .probe/ in the outputs bucket (a refusal for lack of permission counts as accepting: that is not an outage).
func (s *Store) ProbeWrites(ctx context.Context) error {
	var ro bool
	c := s.pool.Config().ConnConfig
	if err := s.pool.QueryRow(ctx, `SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool`).Scan(&ro); err != nil {
		return fmt.Errorf("store: postgres at %s:%d: %w", c.Host, c.Port, err)
	}
	if ro {
		return fmt.Errorf("store: postgres at %s:%d refuses writes: read-only (a standby, or default_transaction_read_only)", c.Host, c.Port)
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	key := ".probe/" + hex.EncodeToString(b)
	if _, err := s.s3.PutObject(ctx, s.cfg.BucketOutputs, key, bytes.NewReader(b), int64(len(b)),
		minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
		if minio.ToErrorResponse(err).Code == "AccessDenied" {
			return nil // credentials without write access to this bucket (a worker that never writes there): not an outage
		}
		return fmt.Errorf("store: s3 at %s refuses writes to bucket %s: %w", s.cfg.S3Endpoint, s.cfg.BucketOutputs, err)
	}
	_ = s.s3.RemoveObject(ctx, s.cfg.BucketOutputs, key, minio.RemoveObjectOptions{}) // a leftover is harmless
	return nil
}
