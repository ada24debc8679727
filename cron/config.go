package cron

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"dae/schema"
)

// Job kinds a configured job may have.
const (
	KindTrain      = "train"      // retrain attribute classifiers whose labelled latents changed
	KindScore      = "score"      // score latents not yet scored by the promoted classifiers; sketch new latents
	KindRegenerate = "regenerate" // enqueue regeneration jobs of saved definitions
)

// Config is the cron's configuration, usually read from a JSON file (see LoadConfig and docs/sql.md).
type Config struct {
	Jobs  []Job       `json:"jobs"`
	Train TrainConfig `json:"train"`
	Score ScoreConfig `json:"score"`
}

// Job is one named, scheduled job. Exactly one of Every and Cron is set.
type Job struct {
	Name string `json:"name"` // a safe name; also the advisory lock's name and the cron_runs.job value
	Kind string `json:"kind"` // KindTrain, KindScore or KindRegenerate
	// Every runs the job at every multiple of the duration since the Unix epoch (UTC), e.g. "10m", so replicas
	// started at different times fire together and agree on the tick.
	Every Duration `json:"every,omitzero"`
	// Cron is a crontab line: 5 fields, or 6 with seconds first.
	Cron string `json:"cron,omitempty"`
	// Model limits train and score jobs to one model; "" means every model with latents.
	Model string `json:"model,omitempty"`
	// Definition names the regeneration definition of a regenerate job; "" means every enabled one.
	Definition string `json:"definition,omitempty"`
}

// TrainConfig controls classifier training. Zero values take the defaults of DefaultConfig.
type TrainConfig struct {
	Epochs        int     `json:"epochs,omitempty"`    // at least this many epochs
	MinSteps      int     `json:"min_steps,omitempty"` // more epochs than Epochs when needed for this many Adam steps (few labels)
	LR            float64 `json:"lr,omitempty"`
	Batch         int     `json:"batch,omitempty"`
	HoldOut       float64 `json:"holdout,omitempty"`        // share of labelled latents kept out to measure AUROC
	MinPositives  int     `json:"min_positives,omitempty"`  // fewer positive labels than this: not trained
	MaxUnlabelled int     `json:"max_unlabelled,omitempty"` // PU training: size of the unlabelled sample
	StatsSample   int     `json:"stats_sample,omitempty"`   // latents sampled for the z_sem mean and std
	Seed          uint64  `json:"seed,omitempty"`
	// L2 is the classifiers' ridge penalty: 0 takes diffae.DefaultClassifierL2 (0.01), a negative value means none.
	L2 float64 `json:"l2,omitempty"`
	// PURetrainGrowth: a positive–unlabelled classifier whose labels have not changed is retrained for new latents
	// (its unlabelled pool) only once the model's latent count has moved by more than this share since its last
	// version, since each new version means a scoring pass over every latent. 0 takes the default 0.1; a negative
	// value retrains on any change.
	PURetrainGrowth float64 `json:"pu_retrain_growth,omitempty"`
}

// ScoreConfig controls scoring.
type ScoreConfig struct {
	Page int `json:"page,omitempty"` // latents read, scored and written per transaction
}

// Duration is a time.Duration written as a string ("90s", "10m") in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string such as \"10m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// DefaultConfig trains every 10 minutes, scores every 5 and regenerates every enabled definition hourly.
func DefaultConfig() Config {
	return Config{
		Jobs: []Job{
			{Name: "train", Kind: KindTrain, Every: Duration(10 * time.Minute)},
			{Name: "score", Kind: KindScore, Every: Duration(5 * time.Minute)},
			{Name: "regenerate", Kind: KindRegenerate, Cron: "0 * * * *"},
		},
		Train: TrainConfig{Epochs: 20, MinSteps: 10000, LR: 1e-3, Batch: 64, HoldOut: 0.2, MinPositives: 5, MaxUnlabelled: 20000,
			StatsSample: 20000, Seed: 1, PURetrainGrowth: 0.1},
		Score: ScoreConfig{Page: 2000},
	}
}

// LoadConfig reads a JSON configuration; fields left out take DefaultConfig's values (a file with no "jobs" keeps
// the default jobs).
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("cron: config: %w", err)
	}
	var c Config
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("cron: config %s: %w", path, err)
	}
	c = c.withDefaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("cron: config %s: %w", path, err)
	}
	return c, nil
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Jobs == nil {
		c.Jobs = d.Jobs
	}
	t := &c.Train
	if t.Epochs == 0 {
		t.Epochs = d.Train.Epochs
	}
	if t.MinSteps == 0 {
		t.MinSteps = d.Train.MinSteps
	}
	if t.LR == 0 {
		t.LR = d.Train.LR
	}
	if t.Batch == 0 {
		t.Batch = d.Train.Batch
	}
	if t.HoldOut == 0 {
		t.HoldOut = d.Train.HoldOut
	}
	if t.MinPositives == 0 {
		t.MinPositives = d.Train.MinPositives
	}
	if t.MaxUnlabelled == 0 {
		t.MaxUnlabelled = d.Train.MaxUnlabelled
	}
	if t.StatsSample == 0 {
		t.StatsSample = d.Train.StatsSample
	}
	if t.Seed == 0 {
		t.Seed = d.Train.Seed
	}
	if t.PURetrainGrowth == 0 {
		t.PURetrainGrowth = d.Train.PURetrainGrowth
	}
	if c.Score.Page == 0 {
		c.Score.Page = d.Score.Page
	}
	return c
}

// Validate checks the configuration, naming the first bad job or field.
func (c Config) Validate() error {
	seen := map[string]bool{}
	var errs []error
	for i, j := range c.Jobs {
		if err := j.validate(); err != nil {
			errs = append(errs, fmt.Errorf("job %d (%q): %w", i, j.Name, err))
		}
		if seen[j.Name] {
			errs = append(errs, fmt.Errorf("job %d: name %q used twice", i, j.Name))
		}
		seen[j.Name] = true
	}
	t := c.Train
	switch {
	case t.Epochs < 1 || t.MinSteps < 1 || t.LR <= 0 || t.Batch < 1:
		errs = append(errs, fmt.Errorf("train: epochs, min_steps, lr and batch must be positive"))
	case t.HoldOut <= 0 || t.HoldOut >= 1:
		errs = append(errs, fmt.Errorf("train: holdout %g not in (0, 1)", t.HoldOut))
	case t.MinPositives < 1 || t.MaxUnlabelled < 1 || t.StatsSample < 2:
		errs = append(errs, fmt.Errorf("train: min_positives, max_unlabelled and stats_sample must be positive"))
	}
	if c.Score.Page < 1 || c.Score.Page > 100000 {
		errs = append(errs, fmt.Errorf("score: page %d not in 1..100000", c.Score.Page))
	}
	return errors.Join(errs...)
}

func (j Job) validate() error {
	if err := schema.CheckName(j.Name); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	switch j.Kind {
	case KindTrain, KindScore, KindRegenerate:
	default:
		return fmt.Errorf("kind %q not one of %s, %s, %s", j.Kind, KindTrain, KindScore, KindRegenerate)
	}
	if (j.Every == 0) == (j.Cron == "") {
		return fmt.Errorf("want exactly one of every and cron")
	}
	if j.Every < 0 || (j.Every > 0 && time.Duration(j.Every) < time.Second) {
		return fmt.Errorf("every %v: want at least 1s", time.Duration(j.Every))
	}
	if j.Cron != "" {
		if n := len(strings.Fields(j.Cron)); n != 5 && n != 6 {
			return fmt.Errorf("cron %q: want 5 fields (or 6 with seconds), have %d", j.Cron, n)
		}
	}
	if j.Model != "" {
		if j.Kind == KindRegenerate {
			return fmt.Errorf("model: regenerate jobs take the model from their definitions")
		}
		if err := schema.CheckName(j.Model); err != nil {
			return fmt.Errorf("model: %w", err)
		}
	}
	if j.Definition != "" {
		if j.Kind != KindRegenerate {
			return fmt.Errorf("definition: only regenerate jobs have one")
		}
		if err := schema.CheckName(j.Definition); err != nil {
			return fmt.Errorf("definition: %w", err)
		}
	}
	return nil
}

// withSeconds reports whether the job's crontab has a seconds field.
func (j Job) withSeconds() bool { return len(strings.Fields(j.Cron)) == 6 }

// Tick is the schedule time a run at now belongs to: now rounded to the job's period (Every, or the crontab's
// resolution, a minute or a second). Replicas that fire for the same scheduled time a little apart agree on it,
// and it is what makes a tick run once (cron_runs is unique by job and tick).
func (j Job) Tick(now time.Time) time.Time {
	switch {
	case j.Every > 0:
		return now.Round(time.Duration(j.Every)).UTC()
	case j.withSeconds():
		return now.Round(time.Second).UTC()
	}
	return now.Round(time.Minute).UTC()
}

// Find returns the job named name.
func (c Config) Find(name string) (Job, bool) {
	for _, j := range c.Jobs {
		if j.Name == name {
			return j, true
		}
	}
	return Job{}, false
}
