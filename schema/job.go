package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Version is the job message version this package reads and writes (the "v" field).
const Version = 1

// MaxMessageBytes is the largest job message Parse accepts. Jobs name their inputs; they never carry pixels.
const MaxMessageBytes = 64 << 10

// Kind is what a job asks for.
type Kind string

// The job kinds.
const (
	KindEncode      Kind = "encode"      // image → (z_sem, x_T), stored as a latent
	KindDecode      Kind = "decode"      // stored latent → image, with encoded or random x_T
	KindManipulate  Kind = "manipulate"  // stored latent moved along an attribute → image
	KindInterpolate Kind = "interpolate" // two stored latents → frames between them
	KindSample      Kind = "sample"      // latent DDIM → new images
	KindRegenerate  Kind = "regenerate"  // re-decode or re-manipulate after a model or classifier update
)

// Kinds lists every job kind, in a fixed order.
func Kinds() []Kind {
	return []Kind{KindEncode, KindDecode, KindManipulate, KindInterpolate, KindSample, KindRegenerate}
}

// Valid reports whether k is one of the job kinds.
func (k Kind) Valid() bool {
	switch k {
	case KindEncode, KindDecode, KindManipulate, KindInterpolate, KindSample, KindRegenerate:
		return true
	}
	return false
}

// ErrInvalid is wrapped by every error Parse and Validate return: the message is bad and retrying it cannot help.
var ErrInvalid = errors.New("invalid job")

// FieldError says which field of a job message is wrong and why.
type FieldError struct {
	Kind    Kind   // the job's kind, empty when the kind itself is unknown
	Field   string // the JSON field name
	Problem string // what is wrong, e.g. "missing"
}

func (e *FieldError) Error() string {
	if e.Kind == "" {
		return fmt.Sprintf("schema: job: field %q: %s", e.Field, e.Problem)
	}
	return fmt.Sprintf("schema: %s job: field %q: %s", e.Kind, e.Field, e.Problem)
}

// Unwrap makes every FieldError match ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Header holds the fields every job message has.
type Header struct {
	V     int    `json:"v"`               // message version; Marshal sets it
	Kind  Kind   `json:"kind"`            // job kind; Marshal sets it
	Model string `json:"model"`           // model id (a safe name)
	Batch string `json:"batch,omitempty"` // batch id (a safe name), empty for ad-hoc jobs
}

// Job is one job message. The concrete types are *Encode, *Decode, *Manipulate, *Interpolate, *Sample and
// *Regenerate.
type Job interface {
	// JobKind is the kind of job.
	JobKind() Kind
	// Meta returns the common fields.
	Meta() Header
	// Validate checks every field and returns a *FieldError naming the first bad one.
	Validate() error
	// DedupKey identifies the job's effect: two messages with the same key do the same work, so a redelivery or a
	// re-run writes nothing new. It is built from validated fields only.
	DedupKey() string
}

// Encode asks for an image's two-part code.
type Encode struct {
	Header
	ImageHash string `json:"image_hash"`       // SHA-256 of the source image, which is stored under ImageKey(hash)
	Source    string `json:"source,omitempty"` // where the image came from (a path or URL), for people; never used in keys
	// Steps is the number of DDIM steps of the stochastic encoder (0: the worker's default).
	Steps int `json:"steps,omitempty"`
}

// Decode asks for an image decoded from a stored latent.
type Decode struct {
	Header
	ImageHash string `json:"image_hash"` // the latent's image
	Steps     int    `json:"steps"`      // DDIM steps T, 1..1000
	Noise     string `json:"x_t"`        // "encoded" (the stored x_T) or "random" (x_T ~ N(0,I) from Seed)
	Seed      int64  `json:"seed,omitempty"`
}

// Manipulate asks for a stored latent moved along an attribute's classifier direction, then decoded.
type Manipulate struct {
	Header
	ImageHash string  `json:"image_hash"`
	Attribute string  `json:"attribute"`       // the promoted classifier of this attribute is used
	Scale     float64 `json:"scale,omitempty"` // step along the normalised direction; non-zero, |scale| ≤ 100
	// Target, instead of Scale, moves the code to a logit the classifier recorded (paper Eq. 11): "median" or a
	// quantile of its training positives' logits, one of ManipulateTargets.
	Target string `json:"target,omitempty"`
	Steps  int    `json:"steps"`
	// Rounds > 1 (only with a target) refines the edit: the decoded edit is encoded again (z_sem and x_T, with
	// the worker's encode steps) and moved to the target again, Rounds times in all; 0 and 1: the paper's single
	// edit, and Marshal leaves 1 out. Workers from before this field refuse jobs that carry it (unknown field)
	// rather than ignore it.
	Rounds int `json:"rounds,omitempty"`
}

// ManipulateTargets are the logit targets a manipulate job may name (the ones classifiers record).
var ManipulateTargets = []string{"median", "p75", "p90", "p95"}

// MaxRounds bounds Manipulate.Rounds (every round costs an encode and a decode); diffae.MaxEditRounds.
const MaxRounds = 8

// Interpolate asks for frames between two stored latents.
type Interpolate struct {
	Header
	ImageHashA string `json:"image_hash_a"`
	ImageHashB string `json:"image_hash_b"`
	Frames     int    `json:"frames"` // 2..256, both ends included
	Steps      int    `json:"steps"`
}

// Sample asks for new images from the latent DDIM, optionally conditioned on an attribute (few-shot sampling).
type Sample struct {
	Header
	Count       int    `json:"count"` // 1..1024
	Steps       int    `json:"steps"`
	LatentSteps int    `json:"latent_steps"`
	Seed        int64  `json:"seed"`
	Attribute   string `json:"attribute,omitempty"`
	// MinProb is the acceptance threshold of conditional sampling (0: the paper's 0.5); only with Attribute.
	// Workers from before this field refuse jobs that carry it (unknown field) rather than ignore it.
	MinProb float64 `json:"min_prob,omitempty"`
}

// Regenerate asks for a stored latent to be decoded or manipulated again, after a model or classifier update.
type Regenerate struct {
	Header
	ImageHash  string  `json:"image_hash"`
	Op         Kind    `json:"op"`                  // KindDecode or KindManipulate
	Attribute  string  `json:"attribute,omitempty"` // required when Op is manipulate
	Scale      float64 `json:"scale,omitempty"`     // when Op is manipulate: this or Target
	Target     string  `json:"target,omitempty"`    // when Op is manipulate, instead of Scale: one of ManipulateTargets
	Rounds     int     `json:"rounds,omitempty"`    // with Target: refine the edit, as Manipulate.Rounds
	Steps      int     `json:"steps"`
	Generation int64   `json:"generation"`      // ≥ 1; distinguishes one regeneration round from the next
	Query      string  `json:"query,omitempty"` // the saved query that selected the latent, if any
}

func (*Encode) JobKind() Kind      { return KindEncode }
func (*Decode) JobKind() Kind      { return KindDecode }
func (*Manipulate) JobKind() Kind  { return KindManipulate }
func (*Interpolate) JobKind() Kind { return KindInterpolate }
func (*Sample) JobKind() Kind      { return KindSample }
func (*Regenerate) JobKind() Kind  { return KindRegenerate }

// Meta returns the common fields.
func (h *Header) Meta() Header { return *h }

// newJob returns an empty job of kind k.
func newJob(k Kind) Job {
	switch k {
	case KindEncode:
		return &Encode{}
	case KindDecode:
		return &Decode{}
	case KindManipulate:
		return &Manipulate{}
	case KindInterpolate:
		return &Interpolate{}
	case KindSample:
		return &Sample{}
	case KindRegenerate:
		return &Regenerate{}
	}
	return nil
}

// Parse reads one job message strictly: the version must be Version, the kind known, every field known, of the
// right type and valid. The error names the bad field and matches ErrInvalid.
func Parse(data []byte) (Job, error) {
	if len(data) > MaxMessageBytes {
		return nil, fmt.Errorf("schema: job: message of %d bytes exceeds %d: %w", len(data), MaxMessageBytes, ErrInvalid)
	}
	var env struct {
		V    *int    `json:"v"`
		Kind *string `json:"kind"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, decodeError("", err)
	}
	switch {
	case env.V == nil:
		return nil, &FieldError{Field: "v", Problem: "missing"}
	case *env.V != Version:
		return nil, &FieldError{Field: "v", Problem: fmt.Sprintf("version %d not supported (want %d)", *env.V, Version)}
	case env.Kind == nil || *env.Kind == "":
		return nil, &FieldError{Field: "kind", Problem: "missing"}
	}
	k := Kind(*env.Kind)
	j := newJob(k)
	if j == nil {
		return nil, &FieldError{Field: "kind", Problem: fmt.Sprintf("unknown kind %q (want one of %s)", clip(*env.Kind), kindList())}
	}
	// json.Unmarshal above has already refused trailing data, so one Decode reads the whole message.
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(j); err != nil {
		return nil, decodeError(k, err)
	}
	if err := j.Validate(); err != nil {
		return nil, err
	}
	return j, nil
}

// Marshal validates j, sets its version and kind, and encodes it as a job message.
func Marshal(j Job) ([]byte, error) {
	h := header(j)
	if h == nil {
		return nil, fmt.Errorf("schema: marshal: unsupported job type %T: %w", j, ErrInvalid)
	}
	h.V, h.Kind = Version, j.JobKind()
	if err := j.Validate(); err != nil {
		return nil, err
	}
	// One round is what no rounds means: leave the field out, so that workers from before it take the job.
	switch c := j.(type) {
	case *Manipulate:
		if c.Rounds == 1 {
			cp := *c
			cp.Rounds = 0
			j = &cp
		}
	case *Regenerate:
		if c.Rounds == 1 {
			cp := *c
			cp.Rounds = 0
			j = &cp
		}
	}
	return json.Marshal(j)
}

func header(j Job) *Header {
	switch j := j.(type) {
	case *Encode:
		return &j.Header
	case *Decode:
		return &j.Header
	case *Manipulate:
		return &j.Header
	case *Interpolate:
		return &j.Header
	case *Sample:
		return &j.Header
	case *Regenerate:
		return &j.Header
	}
	return nil
}

// decodeError turns an encoding/json error into one that names the field.
func decodeError(k Kind, err error) error {
	var typeErr *json.UnmarshalTypeError
	var syntaxErr *json.SyntaxError
	switch {
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			field = "(message)"
		}
		return &FieldError{Kind: k, Field: field, Problem: fmt.Sprintf("want %s, have JSON %s", typeErr.Type, typeErr.Value)}
	case errors.As(err, &syntaxErr):
		return fmt.Errorf("schema: job: not valid JSON at byte %d: %v: %w", syntaxErr.Offset, err, ErrInvalid)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for this; the field name is quoted in the message.
		name, uerr := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		if uerr != nil {
			name = strings.TrimPrefix(err.Error(), "json: unknown field ")
		}
		return &FieldError{Kind: k, Field: name, Problem: "unknown field"}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("schema: job: empty or truncated message: %w", ErrInvalid)
	}
	return fmt.Errorf("schema: job: %v: %w", err, ErrInvalid)
}

func kindList() string {
	var b strings.Builder
	for i, k := range Kinds() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(k))
	}
	return b.String()
}

// checker collects the first field error of a job.
type checker struct {
	kind Kind
	err  *FieldError
}

func (c *checker) fail(field, format string, args ...any) {
	if c.err == nil {
		c.err = &FieldError{Kind: c.kind, Field: field, Problem: fmt.Sprintf(format, args...)}
	}
}

func (c *checker) header(h Header) {
	if h.V != Version {
		c.fail("v", "version %d not supported (want %d)", h.V, Version)
	}
	if h.Kind != c.kind {
		c.fail("kind", "%q does not match the message type %q", h.Kind, c.kind)
	}
	c.name("model", h.Model, true)
	c.name("batch", h.Batch, false)
}

func (c *checker) name(field, v string, required bool) {
	if v == "" {
		if required {
			c.fail(field, "missing")
		}
		return
	}
	if err := CheckName(v); err != nil {
		c.fail(field, "%v", err)
	}
}

func (c *checker) hash(field, v string) {
	if v == "" {
		c.fail(field, "missing")
		return
	}
	if err := CheckHash(v); err != nil {
		c.fail(field, "%v", err)
	}
}

func (c *checker) intRange(field string, v, lo, hi int64) {
	if v == 0 && lo > 0 {
		c.fail(field, "missing")
		return
	}
	if v < lo || v > hi {
		c.fail(field, "%d out of range %d..%d", v, lo, hi)
	}
}

func (c *checker) scale(field string, v float64) {
	switch {
	case v == 0:
		c.fail(field, "missing")
	case math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) > 100:
		c.fail(field, "%g out of range -100..100", v)
	}
}

// moveBy checks how far a manipulation moves: a scale, or else a target, not both.
func (c *checker) moveBy(scale float64, target string) {
	switch {
	case target == "":
		c.scale("scale", scale)
	case scale != 0:
		c.fail("scale", "given with a target: give one of scale and target")
	case !slices.Contains(ManipulateTargets, target):
		c.fail("target", "%q not one of %v", clip(target), ManipulateTargets)
	}
}

// rounds checks the rounds of a refined edit: 0 or 1 (one edit), up to MaxRounds with a target.
func (c *checker) rounds(rounds int, target string) {
	switch {
	case rounds < 0 || rounds > MaxRounds:
		c.fail("rounds", "%d out of range 0..%d (0 and 1: one edit)", rounds, MaxRounds)
	case rounds > 1 && target == "":
		c.fail("rounds", "%d without a target: only an edit to a target can be repeated", rounds)
	}
}

func (c *checker) text(field, v string, max int) {
	if len(v) > max {
		c.fail(field, "longer than %d bytes", max)
		return
	}
	if !utf8.ValidString(v) {
		c.fail(field, "not valid UTF-8")
		return
	}
	if strings.ContainsFunc(v, unicode.IsControl) {
		c.fail(field, "contains control characters")
	}
}

func (c *checker) result() error {
	if c.err == nil {
		return nil
	}
	return c.err
}

// MaxSteps is the most DDIM steps a job may ask for (the training process has 1000).
const MaxSteps = 1000

// StepsValid reports whether n DDIM steps exist over the 1000-step process: as in the reference's respacing, the
// steps are every s-th timestep from 0 for a stride s, so n must be ⌈1000/s⌉ for some s (1..20 all are, 37 is not).
func StepsValid(n int) bool {
	if n < 1 || n > MaxSteps {
		return false
	}
	for s := 1; s <= MaxSteps; s++ {
		if (MaxSteps+s-1)/s == n {
			return true
		}
	}
	return false
}

// steps checks a step count: 1..MaxSteps and one that respacing can make.
func (c *checker) steps(field string, n int) {
	c.intRange(field, int64(n), 1, MaxSteps)
	if n >= 1 && n <= MaxSteps && !StepsValid(n) {
		c.fail(field, "%d: no stride of the %d-step process gives exactly %d steps", n, MaxSteps, n)
	}
}

// Validate checks every field.
func (j *Encode) Validate() error {
	c := checker{kind: KindEncode}
	c.header(j.Header)
	c.hash("image_hash", j.ImageHash)
	c.text("source", j.Source, 4096)
	if j.Steps != 0 {
		c.steps("steps", j.Steps)
	}
	return c.result()
}

// Validate checks every field.
func (j *Decode) Validate() error {
	c := checker{kind: KindDecode}
	c.header(j.Header)
	c.hash("image_hash", j.ImageHash)
	c.steps("steps", j.Steps)
	switch j.Noise {
	case "encoded":
		if j.Seed != 0 {
			// The stored x_T is decoded: a seed would change nothing but the job's key (and so repeat its work).
			c.fail("seed", "%d given with x_t encoded; a seed is for x_t random only", j.Seed)
		}
	case "random":
	case "":
		c.fail("x_t", "missing")
	default:
		c.fail("x_t", "%q not one of encoded, random", clip(j.Noise))
	}
	return c.result()
}

// Validate checks every field.
func (j *Manipulate) Validate() error {
	c := checker{kind: KindManipulate}
	c.header(j.Header)
	c.hash("image_hash", j.ImageHash)
	c.name("attribute", j.Attribute, true)
	c.moveBy(j.Scale, j.Target)
	c.steps("steps", j.Steps)
	c.rounds(j.Rounds, j.Target)
	return c.result()
}

// Validate checks every field.
func (j *Interpolate) Validate() error {
	c := checker{kind: KindInterpolate}
	c.header(j.Header)
	c.hash("image_hash_a", j.ImageHashA)
	c.hash("image_hash_b", j.ImageHashB)
	c.intRange("frames", int64(j.Frames), 2, 256)
	c.steps("steps", j.Steps)
	return c.result()
}

// Validate checks every field.
func (j *Sample) Validate() error {
	c := checker{kind: KindSample}
	c.header(j.Header)
	c.intRange("count", int64(j.Count), 1, 1024)
	c.steps("steps", j.Steps)
	c.steps("latent_steps", j.LatentSteps)
	c.name("attribute", j.Attribute, false)
	switch {
	case j.MinProb == 0:
	case j.Attribute == "":
		c.fail("min_prob", "given without an attribute")
	case !(j.MinProb > 0 && j.MinProb < 1):
		c.fail("min_prob", "%g: want a probability strictly between 0 and 1", j.MinProb)
	}
	return c.result()
}

// Validate checks every field.
func (j *Regenerate) Validate() error {
	c := checker{kind: KindRegenerate}
	c.header(j.Header)
	c.hash("image_hash", j.ImageHash)
	switch j.Op {
	case KindDecode:
		if j.Attribute != "" {
			c.fail("attribute", "set, but op is decode")
		}
		if j.Scale != 0 {
			c.fail("scale", "set, but op is decode")
		}
		if j.Target != "" {
			c.fail("target", "set, but op is decode")
		}
		if j.Rounds != 0 && j.Rounds != 1 {
			c.fail("rounds", "%d, but op is decode", j.Rounds)
		}
	case KindManipulate:
		c.name("attribute", j.Attribute, true)
		c.moveBy(j.Scale, j.Target)
		c.rounds(j.Rounds, j.Target)
	case "":
		c.fail("op", "missing")
	default:
		c.fail("op", "%q not one of decode, manipulate", clip(string(j.Op)))
	}
	c.steps("steps", j.Steps)
	c.intRange("generation", j.Generation, 1, math.MaxInt64)
	c.name("query", j.Query, false)
	return c.result()
}

// DedupKey identifies the job's effect.
func (j *Encode) DedupKey() string { return "encode/" + j.Model + "/" + j.ImageHash }

// DedupKey identifies the job's effect.
func (j *Decode) DedupKey() string {
	return fmt.Sprintf("decode/%s/%s/t%d/%s/s%d", j.Model, j.ImageHash, j.Steps, j.Noise, j.Seed)
}

// DedupKey identifies the job's effect.
func (j *Manipulate) DedupKey() string {
	move := strconv.FormatFloat(j.Scale, 'g', -1, 64)
	if j.Target != "" {
		move = j.Target // not a number: cannot collide with a scale
	}
	key := fmt.Sprintf("manipulate/%s/%s/%s/%s/t%d", j.Model, j.ImageHash, j.Attribute, move, j.Steps)
	if j.Rounds > 1 { // 0 and 1 are the same job
		key += fmt.Sprintf("/r%d", j.Rounds)
	}
	return key
}

// DedupKey identifies the job's effect.
func (j *Interpolate) DedupKey() string {
	return fmt.Sprintf("interpolate/%s/%s/%s/f%d/t%d", j.Model, j.ImageHashA, j.ImageHashB, j.Frames, j.Steps)
}

// DedupKey identifies the job's effect.
func (j *Sample) DedupKey() string {
	key := fmt.Sprintf("sample/%s/s%d/n%d/t%d/l%d/%s", j.Model, j.Seed, j.Count, j.Steps, j.LatentSteps, j.Attribute)
	if j.MinProb != 0 && j.MinProb != 0.5 { // 0.5 is what 0 means: the same job
		key += "/p" + strconv.FormatFloat(j.MinProb, 'g', -1, 64)
	}
	return key
}

// DedupKey identifies the job's effect.
func (j *Regenerate) DedupKey() string {
	move := strconv.FormatFloat(j.Scale, 'g', -1, 64)
	if j.Target != "" {
		move = j.Target
	}
	key := fmt.Sprintf("regenerate/%s/%s/g%d/%s/%s/%s/t%d", j.Model, j.ImageHash, j.Generation, j.Op, j.Attribute,
		move, j.Steps)
	if j.Rounds > 1 {
		key += fmt.Sprintf("/r%d", j.Rounds)
	}
	return key
}
