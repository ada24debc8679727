package diffae

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"dae/nn"
)

// TestConfigBounds: every preset validates, and a configuration with a field out of range is refused with an
// error naming the field, by Validate and by Load (naming the checkpoint too), before any network is built: huge
// or negative sizes would otherwise panic while allocating, 65 levels divide by zero.
func TestConfigBounds(t *testing.T) {
	for _, name := range PresetNames() {
		cfg, err := Preset(name)
		if err != nil {
			t.Errorf("preset %s: %v", name, err)
			continue
		}
		if err := cfg.Baseline().Validate(); err != nil {
			t.Errorf("preset %s, baseline: %v", name, err)
		}
	}

	dir := t.TempDir()
	good := filepath.Join(dir, "tiny.safetensors")
	if err := New(cpu, tinyConfig(t, false), 1).Save(good, "F32", nil); err != nil {
		t.Fatal(err)
	}
	f, err := nn.ReadSafetensors(good)
	if err != nil {
		t.Fatal(err)
	}
	var ts []nn.STTensor
	for _, n := range f.Order {
		v, s := get(t, f, n)
		ts = append(ts, nn.STTensor{Name: n, Shape: s, Data: v})
	}
	for _, tc := range []struct {
		field string
		edit  func(c *Config)
	}{
		{"channel_mult", func(c *Config) { c.ChannelMult = slices.Repeat([]int{1}, 65) }},
		{"channel_mult", func(c *Config) { c.ChannelMult = []int{1, 1 << 40} }},
		{"enc_channel_mult", func(c *Config) { c.EncChannelMult = []int{1, 0} }},
		{"model_channels", func(c *Config) { c.ModelChannels = 4194304 }},
		{"image_size", func(c *Config) { c.ImageSize = 1 << 20 }},
		{"num_res_blocks", func(c *Config) { c.NumResBlocks = 1000 }},
		{"enc_num_res_block", func(c *Config) { c.EncNumResBlock = -1 }},
		{"embed_channels", func(c *Config) {
			c.EmbedChannels, c.EncOutChannels, c.LatentNet.NumChannels = 1<<20, 1<<20, 1<<20
		}},
		{"latent_net_conf.num_hid_channels", func(c *Config) { c.LatentNet.NumHidChannels = -1 }},
		{"latent_net_conf.num_time_emb_channels", func(c *Config) { c.LatentNet.NumTimeEmbChannels = 0 }},
		{"latent_net_conf.num_layers", func(c *Config) { c.LatentNet.NumLayers = 1000 }},
		{"dropout", func(c *Config) { c.Dropout = 1 }}, // every activation dropped: the devices disagree (0 or Inf)
	} {
		cfg := tinyConfig(t, false)
		tc.edit(cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), `"`+tc.field+`"`) {
			t.Errorf("%s out of range: Validate says %v, want an error naming the field", tc.field, err)
			continue
		}
		path := filepath.Join(dir, "bad.safetensors")
		meta := map[string]string{MetaConfig: cfg.JSON(), MetaFormat: FormatVersion}
		if err := nn.WriteSafetensors(path, ts, "F32", meta); err != nil {
			t.Fatal(err)
		}
		_, err = Load(cpu, path)
		if !errors.Is(err, ErrCheckpoint) || !strings.Contains(err.Error(), path) ||
			!strings.Contains(err.Error(), `"`+tc.field+`"`) {
			t.Errorf("%s out of range: Load says %v, want ErrCheckpoint naming %s and the field", tc.field, err, path)
		}
	}
}
