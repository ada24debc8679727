package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"dae/diffae"
	"dae/nn"
	"dae/schema"
	"dae/store"
	"dae/tensor"
)

// ErrUnknownModel marks a job naming a model that has no row and no local checkpoint: a permanent failure.
var ErrUnknownModel = errors.New("unknown model")

// modelSource finds a model's checkpoint by id: <Dir>/<id>.safetensors when Dir holds it, else the checkpoint
// the model's row names in the models bucket.
type modelSource struct {
	dir string
	st  *store.Store
}

// checkpoint returns the bytes of the model's checkpoint.
func (s modelSource) checkpoint(ctx context.Context, id string) ([]byte, string, error) {
	if err := schema.CheckName(id); err != nil {
		return nil, "", permanent(fmt.Errorf("model %q: %w: %w", id, ErrUnknownModel, err))
	}
	if s.dir != "" {
		path := filepath.Join(s.dir, id+".safetensors")
		if raw, err := os.ReadFile(path); err == nil {
			return raw, path, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, "", fmt.Errorf("model %s: %w", id, err)
		}
	}
	row, err := s.st.GetModel(ctx, id)
	if store.IsNotFound(err) {
		return nil, "", permanent(fmt.Errorf("model %s: %w (no row in models and no checkpoint in --models)", id, ErrUnknownModel))
	}
	if err != nil {
		return nil, "", err
	}
	if row.CheckpointKey == "" {
		return nil, "", permanent(fmt.Errorf("model %s: %w: its row names no checkpoint", id, ErrUnknownModel))
	}
	raw, _, err := s.st.GetObject(ctx, s.st.Config().BucketModels, row.CheckpointKey)
	if store.IsNotFound(err) {
		return nil, "", permanent(fmt.Errorf("model %s: %w: checkpoint %s is missing", id, ErrUnknownModel, row.CheckpointKey))
	}
	if err != nil {
		return nil, "", err
	}
	return raw, row.CheckpointKey, nil
}

// load builds the model on dev.
func (s modelSource) load(ctx context.Context, dev tensor.Device, id string) (*diffae.Model, error) {
	raw, name, err := s.checkpoint(ctx, id)
	if err != nil {
		return nil, err
	}
	f, err := nn.ParseSafetensors(raw)
	if err != nil {
		return nil, permanent(fmt.Errorf("model %s: checkpoint %s: %w", id, name, err))
	}
	f.Path = name
	m, err := diffae.FromSafetensors(dev, f)
	if err != nil {
		return nil, permanent(fmt.Errorf("model %s: %w", id, err))
	}
	if m.Enc == nil {
		// A DDIM baseline (RegisterModel refuses them; a --models folder may hold one): no job can use it.
		return nil, permanent(fmt.Errorf("%w: model %s: checkpoint %s is a DDIM baseline, with no semantic encoder; workers need a Diff-AE", ErrUnknownModel, id, name))
	}
	m.ID = id
	return m, nil
}

// RegisterModel makes a checkpoint file usable by workers: it uploads it to the models bucket (unless it is there)
// and records its row. The id is name, or when name is empty the file's base name and the checkpoint's hash
// (fmnist32-1a2b…), so that a retrained checkpoint is a different model and its latents never mix with the old.
func RegisterModel(ctx context.Context, st *store.Store, path, name string) (store.Model, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return store.Model{}, fmt.Errorf("register model: %w", err)
	}
	m, err := diffae.Load(tensor.NewCPU(1), path)
	if err != nil {
		return store.Model{}, fmt.Errorf("register model %s: %w", path, err)
	}
	if m.Enc == nil {
		return store.Model{}, fmt.Errorf("register model %s: a DDIM baseline has no semantic encoder; workers need a Diff-AE", path)
	}
	id := name
	if id == "" {
		base := strings.ToLower(strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)))
		id = base + "-" + m.ID
	}
	if err := schema.CheckName(id); err != nil {
		return store.Model{}, fmt.Errorf("register model %s: id: %w (choose one with --model-id)", path, err)
	}
	key, err := schema.CheckpointKey(id)
	if err != nil {
		return store.Model{}, fmt.Errorf("register model %s: %w", path, err)
	}
	old, _, err := st.GetObject(ctx, st.Config().BucketModels, key)
	switch {
	case store.IsNotFound(err):
		if _, err := st.PutObject(ctx, st.Config().BucketModels, key, raw, "application/octet-stream"); err != nil {
			return store.Model{}, fmt.Errorf("register model %s: %w", id, err)
		}
	case err != nil:
		return store.Model{}, fmt.Errorf("register model %s: %w", id, err)
	case !bytes.Equal(old, raw):
		// Workers would go on with the stored weights, and latents of two checkpoints would share one model id.
		return store.Model{}, fmt.Errorf("register model %s: model id %s already names a different checkpoint (choose another --model-id, or none for one from the file's hash)", path, id)
	}
	row := store.Model{ID: id, ZDim: m.Cfg.ZDim(), Config: []byte(m.Cfg.JSON()), CheckpointKey: key}
	if err := st.UpsertModel(ctx, row); err != nil {
		return store.Model{}, fmt.Errorf("register model %s: %w", id, err)
	}
	return row, nil
}
