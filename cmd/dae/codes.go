package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"dae/diffae"
	"dae/nn"
)

// A codes file is a safetensors file holding what `dae encode` computed for N images: float32 z_sem [N,d] (absent
// for the DDIM baseline, which has no semantic encoder) and x_T [N,C,H,W] (absent with --semantic-only), and in its
// metadata the input names, the ID and configuration of the model that computed them and the DDIM steps. Codes mean
// something only to the weights that produced them, so decode checks the model before using them.
const (
	codesFormat     = "dae-codes/1"
	codesTensorZ    = "z_sem"
	codesTensorXT   = "x_T"
	codesMetaInputs = "inputs"
	codesMetaModel  = "model_id"
	codesMetaSteps  = "steps"
)

// errOtherModel marks a codes file that was not computed by the model given to decode it.
var errOtherModel = errors.New("codes from another model")

// codes is the content of a codes file.
type codes struct {
	N       int
	Inputs  []string  // names of the encoded images, one per code; nil if unknown
	ModelID string    // diffae.Model.ID of the encoder
	Config  string    // the encoder's configuration JSON
	Steps   int       // DDIM steps of the stochastic encoding (0: semantic only)
	Z       []float32 // N×ZDim, nil for the baseline
	ZDim    int
	XT      []float32 // N×C×H×W, nil when semantic only
	XTShape []int     // C, H, W of one x_T
}

// newCodes describes n codes computed by m.
func newCodes(m *diffae.Model, inputs []string, steps int, z, xT []float32) *codes {
	c := &codes{N: len(inputs), Inputs: inputs, ModelID: m.ID, Config: m.Cfg.JSON(), Z: z, XT: xT}
	if z != nil {
		c.ZDim = m.Cfg.ZDim()
	}
	if xT != nil {
		c.Steps = steps
		c.XTShape = []int{m.Cfg.InChannels, m.Cfg.ImageSize, m.Cfg.ImageSize}
	}
	return c
}

// writeCodes writes c to path atomically.
func writeCodes(path string, c *codes) error {
	names, err := json.Marshal(c.Inputs)
	if err != nil {
		return err
	}
	meta := map[string]string{
		diffae.MetaFormat: codesFormat,
		diffae.MetaConfig: c.Config,
		codesMetaModel:    c.ModelID,
		codesMetaInputs:   string(names),
		codesMetaSteps:    strconv.Itoa(c.Steps),
	}
	var ts []nn.STTensor
	if c.Z != nil {
		ts = append(ts, nn.STTensor{Name: codesTensorZ, Shape: []int{c.N, c.ZDim}, Data: c.Z})
	}
	if c.XT != nil {
		ts = append(ts, nn.STTensor{Name: codesTensorXT, Shape: append([]int{c.N}, c.XTShape...), Data: c.XT})
	}
	if err := nn.WriteSafetensors(path, ts, "F32", meta); err != nil {
		return fmt.Errorf("writing codes: %w", err)
	}
	return nil
}

// readCodes reads and checks the internal consistency of a codes file; whether the codes fit a model is
// checkModel's job.
func readCodes(path string) (*codes, error) {
	f, err := nn.ReadSafetensors(path)
	if err != nil {
		return nil, fmt.Errorf("reading codes: %w", err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("codes %s: %s", path, fmt.Sprintf(format, a...))
	}
	c := &codes{ModelID: f.Meta[codesMetaModel], Config: f.Meta[diffae.MetaConfig], N: -1}
	if s, ok := f.Meta[codesMetaSteps]; ok {
		if c.Steps, err = strconv.Atoi(s); err != nil {
			return nil, bad("metadata %q = %q is not a number", codesMetaSteps, s)
		}
		if c.Steps < 0 || c.Steps > diffae.NumTrainSteps {
			return nil, bad("metadata %q = %d: want 0..%d (0: semantic only)", codesMetaSteps, c.Steps, diffae.NumTrainSteps)
		}
	}
	if s, ok := f.Meta[codesMetaInputs]; ok && s != "null" {
		if err := json.Unmarshal([]byte(s), &c.Inputs); err != nil {
			return nil, bad("metadata %q is not a JSON list of names: %v", codesMetaInputs, err)
		}
	}
	setN := func(name string, n int) error {
		if c.N >= 0 && c.N != n {
			return bad("%s holds %d codes, another tensor %d", name, n, c.N)
		}
		c.N = n
		return nil
	}
	if e, ok := f.Tensors[codesTensorZ]; ok {
		if len(e.Shape) != 2 {
			return nil, bad("%s has shape %v, want [N, d]", codesTensorZ, e.Shape)
		}
		if c.Z, err = e.Float32(); err != nil {
			return nil, bad("%s: %v", codesTensorZ, err)
		}
		if !holdsShape(c.Z, e.Shape) {
			return nil, bad("%s has %d values, not the shape %v", codesTensorZ, len(c.Z), e.Shape)
		}
		c.ZDim = e.Shape[1]
		if err := setN(codesTensorZ, e.Shape[0]); err != nil {
			return nil, err
		}
	}
	if e, ok := f.Tensors[codesTensorXT]; ok {
		if len(e.Shape) != 4 {
			return nil, bad("%s has shape %v, want [N, C, H, W]", codesTensorXT, e.Shape)
		}
		if c.XT, err = e.Float32(); err != nil {
			return nil, bad("%s: %v", codesTensorXT, err)
		}
		if !holdsShape(c.XT, e.Shape) {
			return nil, bad("%s has %d values, not the shape %v", codesTensorXT, len(c.XT), e.Shape)
		}
		c.XTShape = slices.Clone(e.Shape[1:])
		if err := setN(codesTensorXT, e.Shape[0]); err != nil {
			return nil, err
		}
	}
	if c.N < 0 {
		return nil, bad("neither %q nor %q is in it (not a codes file?)", codesTensorZ, codesTensorXT)
	}
	if c.Inputs != nil && len(c.Inputs) != c.N {
		return nil, bad("%d input names for %d codes", len(c.Inputs), c.N)
	}
	return c, nil
}

// holdsShape reports whether v has exactly the elements of shape, without multiplying out a shape that may be
// large enough to overflow.
func holdsShape(v []float32, shape []int) bool {
	if slices.Contains(shape, 0) {
		return len(v) == 0
	}
	n := len(v)
	for _, s := range shape {
		if s <= 0 || n%s != 0 {
			return false
		}
		n /= s
	}
	return n == 1
}

// checkModel says whether c can be decoded by m: the same weights (unless anyModel, for the same network saved
// under another ID) and, always, tensors of m's shapes.
func (c *codes) checkModel(path string, m *diffae.Model, anyModel bool) error {
	var problems []string
	if !anyModel && c.ModelID != m.ID {
		id := c.ModelID
		if id == "" {
			id = "an unknown model"
		}
		problems = append(problems, fmt.Sprintf("they were encoded by %s, this checkpoint is %s (--any-model decodes them anyway)",
			id, m.ID))
	}
	switch {
	case m.Enc == nil && c.Z != nil:
		problems = append(problems, "they hold z_sem, this checkpoint is a DDIM baseline without a semantic encoder")
	case m.Enc != nil && c.Z == nil:
		problems = append(problems, "they hold no z_sem, this checkpoint is a Diff-AE that needs one")
	case c.Z != nil && c.ZDim != m.Cfg.ZDim():
		problems = append(problems, fmt.Sprintf("z_sem is %d-d, the model's is %d-d", c.ZDim, m.Cfg.ZDim()))
	}
	want := []int{m.Cfg.InChannels, m.Cfg.ImageSize, m.Cfg.ImageSize}
	if c.XT != nil && !slices.Equal(c.XTShape, want) {
		problems = append(problems, fmt.Sprintf("x_T is %v per image, the model's images are %v", c.XTShape, want))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s: %s", errOtherModel, path, strings.Join(problems, "; "))
	}
	return nil
}

// outputNames returns one PNG file name per code: the input's base name with .png when the inputs are known and
// their base names distinct, otherwise numbered names that sort in order.
func outputNames(inputs []string, n int) []string {
	names := make([]string, n)
	seen := map[string]bool{}
	distinct := len(inputs) == n
	for i := 0; distinct && i < n; i++ {
		b := filepath.Base(inputs[i])
		b = strings.TrimSuffix(b, filepath.Ext(b)) + ".png"
		if seen[b] || b == ".png" {
			distinct = false
		}
		seen[b] = true
		names[i] = b
	}
	if distinct {
		return names
	}
	width := len(strconv.Itoa(max(n-1, 0)))
	for i := range names {
		names[i] = fmt.Sprintf("%0*d.png", width, i)
		if i < len(inputs) {
			b := filepath.Base(inputs[i])
			names[i] = fmt.Sprintf("%0*d-%s.png", width, i, strings.TrimSuffix(b, filepath.Ext(b)))
		}
	}
	return names
}
