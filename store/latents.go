package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"dae/schema"

	"github.com/jackc/pgx/v5"
)

// Latent is an image's two-part code under one model: the semantic z_sem and the stochastic x_T with its shape
// (C, H, W for an image). x_T is stored as little-endian float32 bytes and round-trips bit-exactly.
type Latent struct {
	ID        int64 // set by the database
	ModelID   string
	ImageHash string
	ZSem      []float32
	XT        []float32
	XTShape   []int
	CreatedAt time.Time // set by the database
}

// ErrBadLatent marks a latent that can never be stored (IsRefused holds for it): a malformed name or shape, or a
// z_sem or x_T holding NaN or an infinity (a broken model or input; such a code would poison every similarity,
// classifier and regeneration that read it).
var ErrBadLatent = errors.New("bad latent")

// check validates a latent before it is sent, so that the error names it rather than a constraint.
func (l *Latent) check() error {
	if err := l.checkFields(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadLatent, err)
	}
	return nil
}

func (l *Latent) checkFields() error {
	if err := schema.CheckName(l.ModelID); err != nil {
		return fmt.Errorf("model id: %w", err)
	}
	if err := schema.CheckHash(l.ImageHash); err != nil {
		return fmt.Errorf("image hash: %w", err)
	}
	if len(l.ZSem) == 0 {
		return errors.New("empty z_sem")
	}
	n, err := numel(l.XTShape)
	if err != nil {
		return err
	}
	if n != len(l.XT) {
		return fmt.Errorf("x_T has %d values, shape %v needs %d", len(l.XT), l.XTShape, n)
	}
	if i := nonFinite(l.ZSem); i >= 0 {
		return fmt.Errorf("z_sem[%d] is %v", i, l.ZSem[i])
	}
	if i := nonFinite(l.XT); i >= 0 {
		return fmt.Errorf("x_T[%d] is %v", i, l.XT[i])
	}
	return nil
}

// nonFinite returns the index of the first NaN or infinity in v, or -1.
func nonFinite(v []float32) int {
	for i, x := range v {
		if x-x != 0 { // NaN − NaN and ∞ − ∞ are NaN
			return i
		}
	}
	return -1
}

func numel(shape []int) (int, error) {
	if len(shape) == 0 || len(shape) > 8 {
		return 0, fmt.Errorf("x_T shape %v: want 1 to 8 dimensions", shape)
	}
	n := 1
	for _, d := range shape {
		if d <= 0 || d > math.MaxInt32 || n > math.MaxInt32/d {
			return 0, fmt.Errorf("x_T shape %v: bad dimension %d", shape, d)
		}
		n *= d
	}
	return n, nil
}

// EncodeFloat32s returns v as little-endian IEEE-754 bytes, 4 per value.
func EncodeFloat32s(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

// DecodeFloat32s is the inverse of EncodeFloat32s.
func DecodeFloat32s(b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, fmt.Errorf("store: %d bytes is not a whole number of float32s", len(b))
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, nil
}

func int32s(v []int) []int32 {
	out := make([]int32, len(v))
	for i, x := range v {
		out[i] = int32(x) // numel has checked the range
	}
	return out
}

// UpsertLatent stores l unless the model already has a latent for the image, and returns the row's id and whether
// this call inserted it. Storing the same latent twice leaves one row.
func (s *Store) UpsertLatent(ctx context.Context, l Latent) (id int64, inserted bool, err error) {
	if err := l.check(); err != nil {
		return 0, false, fmt.Errorf("store: upsert latent (model %s, image %s): %w", l.ModelID, l.ImageHash, err)
	}
	const q = `
WITH ins AS (
    INSERT INTO latents (model_id, z_dim, image_hash, z_sem, x_t, x_t_shape, x_t_dtype)
    VALUES ($1, $2, $3, $4, $5, $6, 'float32')
    ON CONFLICT (model_id, image_hash) DO NOTHING
    RETURNING id
)
SELECT id, true FROM ins
UNION ALL
SELECT id, false FROM latents WHERE model_id = $1 AND image_hash = $3`
	// A concurrent insert not yet visible to this statement's snapshot can leave both branches empty; try again.
	for range 3 {
		err = s.pool.QueryRow(ctx, q, l.ModelID, len(l.ZSem), l.ImageHash, l.ZSem, EncodeFloat32s(l.XT), int32s(l.XTShape)).
			Scan(&id, &inserted)
		if !errors.Is(err, pgx.ErrNoRows) {
			break
		}
	}
	if err != nil {
		return 0, false, fmt.Errorf("store: upsert latent (model %s, image %s): %w", l.ModelID, l.ImageHash, err)
	}
	return id, inserted, nil
}

// WriteLatents stores many latents at once: it copies them (COPY, binary) into a temporary table and moves them
// into latents with ON CONFLICT DO NOTHING, all in one transaction, so it stays idempotent. It returns how many
// rows were new.
func (s *Store) WriteLatents(ctx context.Context, ls []Latent) (inserted int64, err error) {
	for i := range ls {
		if err := ls[i].check(); err != nil {
			return 0, fmt.Errorf("store: write latents: latent %d (model %s, image %s): %w", i, ls[i].ModelID, ls[i].ImageHash, err)
		}
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
CREATE TEMP TABLE latents_in (
    model_id text, z_dim integer, image_hash text, z_sem real[], x_t bytea, x_t_shape integer[]
) ON COMMIT DROP`); err != nil {
			return fmt.Errorf("temp table: %w", err)
		}
		rows := pgx.CopyFromSlice(len(ls), func(i int) ([]any, error) {
			l := &ls[i]
			return []any{l.ModelID, len(l.ZSem), l.ImageHash, l.ZSem, EncodeFloat32s(l.XT), int32s(l.XTShape)}, nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"latents_in"},
			[]string{"model_id", "z_dim", "image_hash", "z_sem", "x_t", "x_t_shape"}, rows); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		tag, err := tx.Exec(ctx, `
INSERT INTO latents (model_id, z_dim, image_hash, z_sem, x_t, x_t_shape, x_t_dtype)
SELECT model_id, z_dim, image_hash, z_sem, x_t, x_t_shape, 'float32' FROM latents_in
ON CONFLICT (model_id, image_hash) DO NOTHING`)
		if err != nil {
			return fmt.Errorf("insert: %w", err)
		}
		inserted = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: write %d latents: %w", len(ls), err)
	}
	return inserted, nil
}

// GetLatent reads the latent of an image under a model. A missing one matches ErrNotFound.
func (s *Store) GetLatent(ctx context.Context, modelID, imageHash string) (Latent, error) {
	l := Latent{ModelID: modelID, ImageHash: imageHash}
	var xt []byte
	var shape []int32
	err := s.pool.QueryRow(ctx, `
SELECT id, z_sem, x_t, x_t_shape, created_at FROM latents WHERE model_id = $1 AND image_hash = $2`,
		modelID, imageHash).Scan(&l.ID, &l.ZSem, &xt, &shape, &l.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNotFound
	}
	if err != nil {
		return Latent{}, fmt.Errorf("store: latent (model %s, image %s): %w", modelID, imageHash, err)
	}
	if l.XT, err = DecodeFloat32s(xt); err != nil {
		return Latent{}, fmt.Errorf("store: latent %d x_T: %w", l.ID, err)
	}
	l.XTShape = make([]int, len(shape))
	for i, d := range shape {
		l.XTShape[i] = int(d)
	}
	return l, nil
}
