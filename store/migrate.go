package store

import (
	"context"
	"fmt"
	"path"
	"time"

	"dae/migrations"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Migration is one migration file and whether it is applied.
type Migration struct {
	Version   int64
	Name      string // file name
	Applied   bool
	AppliedAt time.Time // zero when not applied
}

// provider runs fn with a goose provider over the store's pool. A Postgres advisory lock serialises concurrent
// migrators (several workers starting at once).
func (s *Store) provider(ctx context.Context, fn func(*goose.Provider) error) error {
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("store: migration lock: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		return fmt.Errorf("store: migrations: %w", err)
	}
	return fn(p)
}

// Migrate applies every pending migration and returns the ones it applied (none when the database is current).
func (s *Store) Migrate(ctx context.Context) ([]Migration, error) {
	var done []Migration
	err := s.provider(ctx, func(p *goose.Provider) error {
		res, err := p.Up(ctx)
		for _, r := range res {
			if r.Error == nil {
				done = append(done, Migration{Version: r.Source.Version, Name: path.Base(r.Source.Path), Applied: true})
			}
		}
		if err != nil {
			return fmt.Errorf("store: migrate up: %w", err)
		}
		return nil
	})
	return done, err
}

// Migrations reports every known migration and whether it is applied.
func (s *Store) Migrations(ctx context.Context) ([]Migration, error) {
	var out []Migration
	err := s.provider(ctx, func(p *goose.Provider) error {
		st, err := p.Status(ctx)
		if err != nil {
			return fmt.Errorf("store: migration status: %w", err)
		}
		for _, m := range st {
			out = append(out, Migration{
				Version:   m.Source.Version,
				Name:      path.Base(m.Source.Path),
				Applied:   m.State == goose.StateApplied,
				AppliedAt: m.AppliedAt,
			})
		}
		return nil
	})
	return out, err
}
