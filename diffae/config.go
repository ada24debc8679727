// Package diffae is the model of the paper "Diffusion Autoencoders" as the authors' code computes it: the UNet
// decoder with AdaGN conditioning, the semantic encoder, the DDIM baseline, the latent MLP, the diffusion schedules,
// DDIM sampling and its reverse (the stochastic encoder), training, checkpoints, classifiers and the applications.
//
// It runs on any tensor.Device and knows nothing of queues, SQL or object stores; the CLI, the workers and the
// scheduled jobs all call it.
package diffae

import (
	"encoding/json"
	"fmt"
	"slices"
)

// Config describes a network with the reference implementation's field names, so the JSON in a checkpoint's
// `config` metadata (or the authors' configuration) builds the same network.
type Config struct {
	// ModelType is "autoencoder" (Diff-AE) or "ddpm" (the DDIM baseline without z_sem).
	ModelType            string        `json:"model_type,omitempty"`
	ImageSize            int           `json:"image_size"`
	InChannels           int           `json:"in_channels"`
	OutChannels          int           `json:"out_channels"`
	ModelChannels        int           `json:"model_channels"`
	ChannelMult          []int         `json:"channel_mult"`
	EncChannelMult       []int         `json:"enc_channel_mult,omitempty"`
	AttentionResolutions []int         `json:"attention_resolutions"`
	EncAttnResolutions   []int         `json:"enc_attn_resolutions,omitempty"`
	NumResBlocks         int           `json:"num_res_blocks"`
	EncNumResBlock       int           `json:"enc_num_res_block,omitempty"`
	EmbedChannels        int           `json:"embed_channels"`
	EncOutChannels       int           `json:"enc_out_channels,omitempty"`
	EncPool              string        `json:"enc_pool,omitempty"`
	Dropout              float64       `json:"dropout"`
	ResnetTwoCond        bool          `json:"resnet_two_cond"`
	LatentNet            *LatentConfig `json:"latent_net_conf,omitempty"`
}

// LatentConfig is the reference's MLPSkipNetConfig.
type LatentConfig struct {
	NumChannels        int     `json:"num_channels"`
	SkipLayers         []int   `json:"skip_layers"`
	NumHidChannels     int     `json:"num_hid_channels"`
	NumLayers          int     `json:"num_layers"`
	NumTimeEmbChannels int     `json:"num_time_emb_channels"`
	Activation         string  `json:"activation"`
	UseNorm            bool    `json:"use_norm"`
	ConditionBias      float64 `json:"condition_bias"`
	Dropout            float64 `json:"dropout"`
	LastAct            string  `json:"last_act"`
	NumTimeLayers      int     `json:"num_time_layers"`
	TimeLastAct        bool    `json:"time_last_act"`
}

// IsAutoencoder reports whether the network has a semantic encoder (Diff-AE) rather than being the DDIM baseline.
func (c *Config) IsAutoencoder() bool { return c.ModelType == "" || c.ModelType == "autoencoder" }

// ZDim is the size of z_sem.
func (c *Config) ZDim() int { return c.EncOutChannels }

// ParseConfig reads a configuration from JSON, fills the reference's defaults and validates it.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("model configuration: %w", err)
	}
	c.fillDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) fillDefaults() {
	if c.ModelType == "" {
		c.ModelType = "autoencoder"
	}
	if c.OutChannels == 0 {
		c.OutChannels = c.InChannels
	}
	if c.EncNumResBlock == 0 {
		c.EncNumResBlock = c.NumResBlocks
	}
	if c.EncAttnResolutions == nil {
		c.EncAttnResolutions = c.AttentionResolutions
	}
	if c.EncPool == "" && c.IsAutoencoder() {
		c.EncPool = "adaptivenonzero"
	}
	if c.EncOutChannels == 0 && c.IsAutoencoder() {
		c.EncOutChannels = c.EmbedChannels
	}
}

// Bounds of a configuration: several times the presets' largest (ffhq256: 256×256 images, 6 and 7 levels, 512
// channels, a latent MLP 2048 wide and 10 deep), yet small enough that a corrupt configuration fails here, naming
// the field, rather than when the network is built.
const (
	maxImageSize    = 1024
	maxLevels       = 10   // entries of channel_mult and enc_channel_mult
	maxChannels     = 4096 // model_channels × a multiplier, embed_channels
	maxResBlocks    = 16   // num_res_blocks, enc_num_res_block
	maxLatentWidth  = 16384
	maxLatentLayers = 64
)

// Validate checks that the configuration describes a network this package builds, naming the bad field.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("model configuration: field %q: %s", field, fmt.Sprintf(format, args...))
	}
	// mults checks the multipliers of a UNet's levels.
	mults := func(field string, ms []int) error {
		if len(ms) == 0 {
			return bad(field, "empty")
		}
		if len(ms) > maxLevels {
			return bad(field, "%d levels, at most %d", len(ms), maxLevels)
		}
		for _, m := range ms {
			if m <= 0 || m > maxChannels/c.ModelChannels {
				return bad(field, "%v: every level must have 1..%d channels (model_channels %d × multiplier)",
					ms, maxChannels, c.ModelChannels)
			}
		}
		return nil
	}
	switch {
	case c.ModelType != "autoencoder" && c.ModelType != "ddpm":
		return bad("model_type", "%q is neither autoencoder nor ddpm", c.ModelType)
	case c.ImageSize <= 0 || c.ImageSize > maxImageSize:
		return bad("image_size", "%d: want 1..%d", c.ImageSize, maxImageSize)
	case c.InChannels != 1 && c.InChannels != 3:
		return bad("in_channels", "%d (1 or 3)", c.InChannels)
	case c.OutChannels != c.InChannels:
		return bad("out_channels", "%d differs from in_channels %d", c.OutChannels, c.InChannels)
	case c.ModelChannels <= 0 || c.ModelChannels > maxChannels:
		return bad("model_channels", "%d: want 1..%d", c.ModelChannels, maxChannels)
	case c.NumResBlocks <= 0 || c.NumResBlocks > maxResBlocks:
		return bad("num_res_blocks", "%d: want 1..%d", c.NumResBlocks, maxResBlocks)
	case c.EmbedChannels <= 0 || c.EmbedChannels > maxChannels:
		return bad("embed_channels", "%d: want 1..%d", c.EmbedChannels, maxChannels)
	case !(c.Dropout >= 0 && c.Dropout < 1): // NaN too
		return bad("dropout", "%v: want 0 ≤ dropout < 1", c.Dropout)
	}
	if err := mults("channel_mult", c.ChannelMult); err != nil {
		return err
	}
	if c.ImageSize%(1<<(len(c.ChannelMult)-1)) != 0 {
		return bad("image_size", "%d is not divisible by 2^(levels-1)", c.ImageSize)
	}
	if c.IsAutoencoder() {
		if err := mults("enc_channel_mult", c.EncChannelMult); err != nil {
			return err
		}
		switch {
		case c.EncNumResBlock <= 0 || c.EncNumResBlock > maxResBlocks:
			return bad("enc_num_res_block", "%d: want 1..%d", c.EncNumResBlock, maxResBlocks)
		case c.EncPool != "adaptivenonzero":
			return bad("enc_pool", "%q is not supported (adaptivenonzero)", c.EncPool)
		case !c.ResnetTwoCond:
			return bad("resnet_two_cond", "must be true for the autoencoder")
		case c.EncOutChannels != c.EmbedChannels:
			return bad("enc_out_channels", "%d must equal embed_channels %d (z_sem conditions every block)",
				c.EncOutChannels, c.EmbedChannels)
		case c.ImageSize%(1<<(len(c.EncChannelMult)-1)) != 0:
			return bad("image_size", "%d is not divisible by 2^(encoder levels-1)", c.ImageSize)
		}
	}
	if l := c.LatentNet; l != nil {
		switch {
		case l.NumChannels != c.EncOutChannels:
			return bad("latent_net_conf.num_channels", "%d differs from z_sem size %d", l.NumChannels, c.EncOutChannels)
		case l.NumLayers < 2 || l.NumLayers > maxLatentLayers:
			return bad("latent_net_conf.num_layers", "%d: want 2..%d", l.NumLayers, maxLatentLayers)
		case l.NumHidChannels <= 0 || l.NumHidChannels > maxLatentWidth:
			return bad("latent_net_conf.num_hid_channels", "%d: want 1..%d", l.NumHidChannels, maxLatentWidth)
		case l.NumTimeEmbChannels <= 0 || l.NumTimeEmbChannels > maxLatentWidth:
			return bad("latent_net_conf.num_time_emb_channels", "%d: want 1..%d", l.NumTimeEmbChannels, maxLatentWidth)
		case l.Activation != "silu":
			return bad("latent_net_conf.activation", "%q is not supported (silu)", l.Activation)
		case l.LastAct != "none" && l.LastAct != "":
			return bad("latent_net_conf.last_act", "%q is not supported (none)", l.LastAct)
		case l.NumTimeLayers != 2:
			return bad("latent_net_conf.num_time_layers", "%d is not supported (2)", l.NumTimeLayers)
		case l.TimeLastAct:
			return bad("latent_net_conf.time_last_act", "true is not supported")
		case l.Dropout != 0:
			return bad("latent_net_conf.dropout", "only 0 is supported")
		}
		for _, s := range l.SkipLayers {
			if s <= 0 || s >= l.NumLayers {
				return bad("latent_net_conf.skip_layers", "%v has a layer outside 1..%d", l.SkipLayers, l.NumLayers-1)
			}
		}
	}
	return nil
}

// JSON is the configuration as stored in checkpoints.
func (c *Config) JSON() string {
	b, _ := json.Marshal(c)
	return string(b)
}

// Clone returns a deep copy.
func (c *Config) Clone() *Config {
	out, _ := ParseConfig([]byte(c.JSON()))
	return out
}

func latentPreset(z, hid, layers int) *LatentConfig {
	skip := make([]int, 0, layers-1)
	for i := 1; i < layers; i++ {
		skip = append(skip, i)
	}
	return &LatentConfig{NumChannels: z, SkipLayers: skip, NumHidChannels: hid, NumLayers: layers,
		NumTimeEmbChannels: 64, Activation: "silu", UseNorm: true, ConditionBias: 1, LastAct: "none",
		NumTimeLayers: 2}
}

// Preset returns a named configuration: the paper's Table 5 models (celeba64, ffhq64, ffhq128, ffhq256), fm32 (the
// benchmark model: 32×32×3), fmnist32 (32×32 grey, for Fashion-MNIST on a CPU) and tiny (for tests).
func Preset(name string) (*Config, error) {
	var c Config
	switch name {
	case "celeba64", "ffhq64":
		c = Config{ImageSize: 64, InChannels: 3, ModelChannels: 64, ChannelMult: []int{1, 2, 4, 8},
			EncChannelMult: []int{1, 2, 4, 8, 8}, AttentionResolutions: []int{16}, NumResBlocks: 2,
			EmbedChannels: 512, EncOutChannels: 512, Dropout: 0.1, ResnetTwoCond: true,
			LatentNet: latentPreset(512, 2048, 10)}
	case "ffhq128":
		c = Config{ImageSize: 128, InChannels: 3, ModelChannels: 128, ChannelMult: []int{1, 1, 2, 3, 4},
			EncChannelMult: []int{1, 1, 2, 3, 4, 4}, AttentionResolutions: []int{16}, NumResBlocks: 2,
			EmbedChannels: 512, EncOutChannels: 512, Dropout: 0.1, ResnetTwoCond: true,
			LatentNet: latentPreset(512, 2048, 10)}
	case "ffhq256":
		c = Config{ImageSize: 256, InChannels: 3, ModelChannels: 128, ChannelMult: []int{1, 1, 2, 2, 4, 4},
			EncChannelMult: []int{1, 1, 2, 2, 4, 4, 4}, AttentionResolutions: []int{16}, NumResBlocks: 2,
			EmbedChannels: 512, EncOutChannels: 512, Dropout: 0.1, ResnetTwoCond: true,
			LatentNet: latentPreset(512, 2048, 10)}
	case "fm32":
		c = Config{ImageSize: 32, InChannels: 3, ModelChannels: 32, ChannelMult: []int{1, 2, 2},
			EncChannelMult: []int{1, 2, 2, 4}, AttentionResolutions: []int{16}, NumResBlocks: 2,
			EmbedChannels: 512, EncOutChannels: 512, Dropout: 0.1, ResnetTwoCond: true}
	case "fmnist32":
		// fm32's layout with one ResBlock per level (two on the way up): sized for training on a 2-core CPU.
		c = Config{ImageSize: 32, InChannels: 1, ModelChannels: 32, ChannelMult: []int{1, 2, 2},
			EncChannelMult: []int{1, 2, 2, 4}, AttentionResolutions: []int{16}, NumResBlocks: 1,
			EmbedChannels: 512, EncOutChannels: 512, Dropout: 0.1, ResnetTwoCond: true,
			LatentNet: latentPreset(512, 512, 4)}
	case "tiny":
		c = Config{ImageSize: 16, InChannels: 3, ModelChannels: 32, ChannelMult: []int{1, 2},
			EncChannelMult: []int{1, 2, 2}, AttentionResolutions: []int{8}, NumResBlocks: 1,
			EmbedChannels: 32, EncOutChannels: 32, Dropout: 0, ResnetTwoCond: true,
			LatentNet: latentPreset(32, 64, 3)}
	default:
		return nil, fmt.Errorf("unknown model preset %q (known: %v)", name, PresetNames())
	}
	c.fillDefaults()
	return &c, c.Validate()
}

// PresetNames lists the presets.
func PresetNames() []string {
	return []string{"celeba64", "ffhq64", "ffhq128", "ffhq256", "fm32", "fmnist32", "tiny"}
}

// Baseline returns the DDIM baseline configuration matching c: the same UNet without z_sem.
func (c *Config) Baseline() *Config {
	b := c.Clone()
	b.ModelType = "ddpm"
	b.EncChannelMult, b.EncAttnResolutions, b.EncNumResBlock, b.EncOutChannels, b.EncPool = nil, nil, 0, 0, ""
	b.ResnetTwoCond = false
	b.LatentNet = nil
	return b
}

func contains(s []int, v int) bool { return slices.Contains(s, v) }
