package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"dae/diffae"
	"dae/tensor"
)

func init() {
	register(command{"eval", "the paper's evaluations: recon (Table 2 analogue), probe (linear probe), … (dae eval lists them)",
		runEval})
}

// evalCommands are the subcommands of `dae eval`.
var evalCommands = map[string]func(ctx context.Context, args []string) error{
	"recon": runEvalRecon,
	"probe": runEvalProbe,
}

func runEval(ctx context.Context, args []string) error {
	if len(args) == 0 || evalCommands[args[0]] == nil {
		names := make([]string, 0, len(evalCommands))
		for n := range evalCommands {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: dae eval <%s> [flags]; dae eval <name> -h for its flags\n",
			strings.Join(names, "|"))
		return fmt.Errorf("%w: eval wants one of %s", errUsage, strings.Join(names, ", "))
	}
	return evalCommands[args[0]](ctx, args[1:])
}

// loadEvalModel loads a checkpoint for evaluation and says which it is, with its training progress, so that a
// table can always be traced to the weights it came from.
func loadEvalModel(dev tensor.Device, path string) (*diffae.Model, string, error) {
	m, err := diffae.Load(dev, path)
	if err != nil {
		return nil, "", err
	}
	desc := fmt.Sprintf("%s (%s", m.Name(), filepath.Base(path))
	var st diffae.TrainState
	if s, ok := m.Meta[diffae.MetaTrainState]; ok && json.Unmarshal([]byte(s), &st) == nil {
		desc += fmt.Sprintf(", %s training step %d", st.Kind, st.Step)
	}
	return m, desc + ")", nil
}

// writeJSON writes v to path, indented, atomically.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".eval-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// jfloat is a float64 that writes NaN and ±Inf (an AUROC of a class absent from a small sample, the PSNR of a
// perfect reconstruction) as JSON null instead of failing the whole report.
type jfloat float64

func (f jfloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(v)
}
