package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"dae/imageio"
	"dae/producer"
	"dae/schema"
)

func init() {
	register(command{"enqueue", "publish jobs: encode an archive (folder, tar/zip, s3://), or decode|manipulate|interpolate|sample", runEnqueue})
}

const enqueueUsage = `usage:
  dae enqueue encode SOURCE --model M [--batch-name N] [--max-pixels P]
  dae enqueue decode --model M --image HASH [--steps 20] [--x-t encoded|random] [--seed S]
  dae enqueue manipulate --model M --image HASH --attribute A (--scale S | --target median|p75|p90|p95 [--rounds R]) [--steps 20]
  dae enqueue interpolate --model M --image HASH --image-b HASH [--frames 8] [--steps 20]
  dae enqueue sample --model M [--count 16] [--steps 20] [--latent-steps 50] [--seed S] [--attribute A [--min-prob P]]

SOURCE is a folder, a .tar/.tar.gz/.tgz/.zip archive or s3://bucket/prefix. M is a registered model id, or a
.safetensors checkpoint, which is uploaded and registered first (its id is printed). Re-running a command publishes
nothing twice: jobs are keyed by model and content, and JetStream drops duplicate message ids.`

func runEnqueue(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, enqueueUsage)
		return fmt.Errorf("%w: which job kind?", errUsage)
	}
	kind := schema.Kind(args[0])
	fs := flag.NewFlagSet("enqueue "+args[0], flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(fs.Output(), enqueueUsage); fs.PrintDefaults() }
	model := fs.String("model", "", "model id or checkpoint file (required)")
	modelID := fs.String("model-id", "", "id to register a checkpoint under (default: file name and content hash)")
	batch := fs.String("batch-name", "", "batch id (default: derived from the source and model for encode; none otherwise)")
	image := fs.String("image", "", "image content hash")
	imageB := fs.String("image-b", "", "second image hash (interpolate)")
	steps := fs.Int("steps", 20, "DDIM steps of the decoder")
	encodeSteps := fs.Int("encode-steps", 0, "DDIM steps of the stochastic encoder asked by encode jobs (0: the worker's --encode-steps)")
	xt := fs.String("x-t", "encoded", "x_T for decode: encoded or random")
	seed := fs.Int64("seed", 0, "random seed (decode with random x_T, sample)")
	attr := fs.String("attribute", "", "attribute (manipulate; sample: only that attribute, by rejection with its promoted classifier)")
	minProb := fs.Float64("min-prob", 0, "acceptance threshold of conditional sampling (0: the paper's 0.5)")
	scale := fs.Float64("scale", 0, "step along the attribute's direction (manipulate)")
	target := fs.String("target", "", "instead of --scale: move to a logit the classifier recorded, median|p75|p90|p95 (manipulate)")
	rounds := fs.Int("rounds", 0, "with --target: encode the decoded edit again and move it to the target again, this many rounds in all (manipulate)")
	frames := fs.Int("frames", 8, "frames, both ends included (interpolate)")
	count := fs.Int("count", 16, "images (sample)")
	latentSteps := fs.Int("latent-steps", 50, "latent DDIM steps (sample)")
	maxPixels := fs.Int64("max-pixels", 0, "largest width×height accepted (0: the default budget)")
	chunk := fs.Int("chunk", 256, "files handled per database round trip (encode)")

	var source string
	rest := args[1:]
	if kind == schema.KindEncode && len(rest) > 0 && rest[0] != "" && rest[0][0] != '-' {
		source, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return err
	}
	if kind == schema.KindEncode && source == "" && fs.NArg() == 1 {
		source = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	if !kind.Valid() || kind == schema.KindRegenerate {
		fmt.Fprintln(os.Stderr, enqueueUsage)
		return fmt.Errorf("%w: unknown job kind %q", errUsage, args[0])
	}
	if kind == schema.KindEncode && source == "" {
		return fmt.Errorf("%w: enqueue encode needs a SOURCE", errUsage)
	}
	if err := firstError(within("encode-steps", *encodeSteps, 0, schema.MaxSteps), atLeast("chunk", *chunk, 1)); err != nil {
		return err
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	nc, js, err := openJetStream("dae enqueue")
	if err != nil {
		return err
	}
	defer nc.Close()
	id, err := resolveModel(ctx, st, *model, *modelID)
	if err != nil {
		return err
	}
	if *model != id {
		fmt.Fprintf(os.Stderr, "model %s registered as %s\n", *model, id)
	}

	h := schema.Header{Model: id, Batch: *batch}
	var job schema.Job
	switch kind {
	case schema.KindEncode:
		if h.Batch == "" {
			h.Batch = defaultBatchName(source, id)
		}
		sum, err := producer.Encode(ctx, st, js, producer.Options{Source: source, Model: id, Batch: h.Batch, Steps: *encodeSteps,
			Chunk: *chunk, Limits: imageio.Limits{MaxPixels: *maxPixels}, Progress: enqueueProgress()})
		fmt.Println(sum)
		if err != nil {
			return err
		}
		fmt.Printf("follow it with: dae status %s\n", h.Batch)
		return nil
	case schema.KindDecode:
		job = &schema.Decode{Header: h, ImageHash: *image, Steps: *steps, Noise: *xt, Seed: *seed}
	case schema.KindManipulate:
		job = &schema.Manipulate{Header: h, ImageHash: *image, Attribute: *attr, Scale: *scale, Target: *target, Steps: *steps, Rounds: *rounds}
	case schema.KindInterpolate:
		job = &schema.Interpolate{Header: h, ImageHashA: *image, ImageHashB: *imageB, Frames: *frames, Steps: *steps}
	case schema.KindSample:
		job = &schema.Sample{Header: h, Count: *count, Steps: *steps, LatentSteps: *latentSteps, Seed: *seed,
			Attribute: *attr, MinProb: *minProb}
	}
	if err := job.Validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	state, err := producer.Publish(ctx, st, js, job)
	if err != nil {
		return err
	}
	switch state {
	case "queued", "running", "":
		fmt.Printf("enqueued %s\n", job.DedupKey())
	default:
		fmt.Printf("already %s: %s (not enqueued again; dae retry re-runs failed jobs)\n", state, job.DedupKey())
	}
	return nil
}
