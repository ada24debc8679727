package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// Environment variables read by ConfigFromEnv. The local stack (deploy/local/up) writes them to .stack/env.
const (
	EnvPGURL         = "DAE_PG_URL"         // Postgres URL, e.g. postgres://dae:…@127.0.0.1:15432/dae
	EnvS3Endpoint    = "DAE_S3_ENDPOINT"    // host:port of the S3 service
	EnvS3AccessKey   = "DAE_S3_ACCESS_KEY"  // S3 access key
	EnvS3SecretKey   = "DAE_S3_SECRET_KEY"  // S3 secret key
	EnvS3Secure      = "DAE_S3_SECURE"      // "true" for HTTPS; default false
	EnvS3Region      = "DAE_S3_REGION"      // default us-east-1
	EnvBucketImages  = "DAE_BUCKET_IMAGES"  // source images; default dae-images
	EnvBucketOutputs = "DAE_BUCKET_OUTPUTS" // generated images; default dae-outputs
	EnvBucketModels  = "DAE_BUCKET_MODELS"  // checkpoints; default dae-models
)

// Config says where the database and the object store are. Build it with ConfigFromEnv or by hand.
type Config struct {
	PGURL string // Postgres connection URL (with credentials)

	S3Endpoint  string // host:port
	S3AccessKey string
	S3SecretKey string
	S3Secure    bool   // use HTTPS
	S3Region    string // default us-east-1

	BucketImages  string // default dae-images
	BucketOutputs string // default dae-outputs
	BucketModels  string // default dae-models

	MaxConns int32 // pool size; 0 means pgx's default
}

// ConfigFromEnv reads the DAE_* variables. Missing required variables are all named in one error.
func ConfigFromEnv() (Config, error) {
	return configFrom(os.LookupEnv)
}

func configFrom(lookup func(string) (string, bool)) (Config, error) {
	var missing []error
	need := func(name string) string {
		v, ok := lookup(name)
		if !ok || v == "" {
			missing = append(missing, fmt.Errorf("%s is not set", name))
		}
		return v
	}
	orDefault := func(name, def string) string {
		if v, ok := lookup(name); ok && v != "" {
			return v
		}
		return def
	}
	c := Config{
		PGURL:         need(EnvPGURL),
		S3Endpoint:    need(EnvS3Endpoint),
		S3AccessKey:   need(EnvS3AccessKey),
		S3SecretKey:   need(EnvS3SecretKey),
		S3Region:      orDefault(EnvS3Region, "us-east-1"),
		BucketImages:  orDefault(EnvBucketImages, "dae-images"),
		BucketOutputs: orDefault(EnvBucketOutputs, "dae-outputs"),
		BucketModels:  orDefault(EnvBucketModels, "dae-models"),
	}
	if v, ok := lookup(EnvS3Secure); ok && v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			missing = append(missing, fmt.Errorf("%s=%q is not a boolean", EnvS3Secure, v))
		}
		c.S3Secure = b
	}
	if len(missing) > 0 {
		return Config{}, fmt.Errorf("store: config from environment (source .stack/env after deploy/local/up): %w", errors.Join(missing...))
	}
	return c, nil
}

// Buckets lists the configured bucket names.
func (c Config) Buckets() []string {
	return []string{c.BucketImages, c.BucketOutputs, c.BucketModels}
}

// LoadConfig is ConfigFromEnv, except that variables not set in the environment are taken from envFile (the
// .stack/env that deploy/local/up writes) when that file exists.
func LoadConfig(envFile string) (Config, error) {
	file, err := ReadEnvFile(envFile)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Config{}, err
	}
	return configFrom(func(name string) (string, bool) {
		if v, ok := os.LookupEnv(name); ok && v != "" {
			return v, true
		}
		v, ok := file[name]
		return v, ok
	})
}

// ReadEnvFile reads the `export NAME='value'` lines of an env file written by deploy/local/up (blank lines and
// # comments are skipped). Values are single-quoted or bare; there is no other shell syntax.
func ReadEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("store: env file: %w", err)
	}
	vars := map[string]string{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok || name == "" || strings.ContainsAny(name, " \t'\"") {
			return nil, fmt.Errorf("store: env file %s:%d: not NAME=value", path, i+1)
		}
		if len(value) >= 2 && value[0] == '\'' && value[len(value)-1] == '\'' {
			value = value[1 : len(value)-1]
		}
		vars[name] = value
	}
	return vars, nil
}
