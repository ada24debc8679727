package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"dae/diffae"
	"dae/tensor"
)

func init() {
	register(command{"export", "write a model for inference: EMA weights only, float16 or float32", runExport})
}

func runExport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	model := fs.String("model", "", "checkpoint to read (a training checkpoint is fine)")
	out := fs.String("out", "", "model file to write")
	dtype := fs.String("dtype", "F16", "storage type: F16 or F32")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae export --model CHECKPOINT --out MODEL.safetensors [--dtype F16]\n\nDrops the training state (raw weights, optimiser moments) and keeps the EMA weights, the\nconfiguration and the latent statistics.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := noArgs(fs.Args()); err != nil {
		return err
	}
	if *model == "" || *out == "" {
		return fmt.Errorf("%w: --model and --out are required", errUsage)
	}
	if *dtype != "F16" && *dtype != "F32" {
		return fmt.Errorf("%w: --dtype %q: F16 or F32", errUsage, *dtype)
	}
	m, err := diffae.Load(tensor.NewCPU(1), *model)
	if err != nil {
		return err
	}
	if st, ok := m.Meta[diffae.MetaTrainState]; ok {
		m.Meta["trained"] = st
		delete(m.Meta, diffae.MetaTrainState)
	}
	if err := m.Save(*out, *dtype, nil); err != nil {
		return err
	}
	fi, err := os.Stat(*out)
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s: %s, %d parameters, %s, %.1f MB\n", *out, m.Name(), m.Params().Count(), *dtype,
		float64(fi.Size())/1e6)
	return nil
}
