// Package storetest gives the integration tests of other packages what store's own tests have: a throwaway,
// migrated database on the local stack (deploy/local/up), dropped when the test ends.
//
// Without a stack the tests skip, unless DAE_REQUIRE_STACK is set (scripts/test sets it): then they fail.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"dae/store"

	"github.com/jackc/pgx/v5"
)

// SkipOrFail skips the test, or fails it when DAE_REQUIRE_STACK is set.
func SkipOrFail(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("DAE_REQUIRE_STACK") != "" {
		tb.Fatalf(format, args...)
	}
	tb.Skipf(format, args...)
}

// StackEnv returns the path of the stack's env file: $DAE_STACK_DIR/env, or .stack/env in the module root found
// above the working directory.
func StackEnv() string {
	if d := os.Getenv("DAE_STACK_DIR"); d != "" {
		return filepath.Join(d, "env")
	}
	dir, err := os.Getwd()
	if err != nil {
		return filepath.Join(".stack", "env")
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".stack", "env")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return filepath.Join(".stack", "env")
		}
		dir = parent
	}
}

// Config returns the stack's configuration pointing at a new, empty database (dropped when the test ends).
func Config(tb testing.TB) store.Config {
	tb.Helper()
	cfg, err := store.LoadConfig(StackEnv())
	if err != nil {
		SkipOrFail(tb, "no local stack (run deploy/local/up): %v", err)
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, cfg.PGURL)
	if err != nil {
		SkipOrFail(tb, "local stack's Postgres does not answer (run deploy/local/up): %v", err)
	}
	defer admin.Close(ctx)
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	name := "dae_test_" + hex.EncodeToString(b)
	// The name is ours (hex), never input; CREATE DATABASE takes no bind parameters.
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	adminURL := cfg.PGURL
	tb.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), adminURL)
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	pc, err := pgx.ParseConfig(cfg.PGURL)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.PGURL = fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", pc.User, pc.Password, pc.Host, pc.Port, name)
	return cfg
}

// Open opens a store on cfg (from Config), migrates it, and closes it when the test ends. Calling it twice with
// one cfg gives two stores (two pools) on one database, as two replicas would have.
func Open(tb testing.TB, cfg store.Config) *store.Store {
	tb.Helper()
	ctx := context.Background()
	s, err := store.Open(ctx, cfg)
	if err != nil {
		SkipOrFail(tb, "local stack does not answer (run deploy/local/up): %v", err)
	}
	tb.Cleanup(s.Close)
	if _, err := s.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	return s
}

// Fresh is Open(tb, Config(tb)).
func Fresh(tb testing.TB) *store.Store {
	tb.Helper()
	return Open(tb, Config(tb))
}

// Exec runs one SQL statement on st's database, past the store's checks: for tests that need rows the store
// refuses to write (a latent stored by an older release, say).
func Exec(tb testing.TB, st *store.Store, sql string, args ...any) {
	tb.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, st.Config().PGURL)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}
