package schema

import (
	"errors"
	"strings"
	"testing"
)

const hashA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
const hashB = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"

func TestParseRejectsNamingTheField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, msg, want string
	}{
		{"missing image_hash", `{"v":1,"kind":"encode","model":"fm32"}`, `schema: encode job: field "image_hash": missing`},
		{"bad hash", `{"v":1,"kind":"encode","model":"fm32","image_hash":"../etc/passwd"}`, `field "image_hash": hash "../etc/passwd": want 64 hex digits`},
		{"upper-case hash", `{"v":1,"kind":"encode","model":"fm32","image_hash":"` + strings.ToUpper(hashA) + `"}`, `field "image_hash"`},
		{"missing version", `{"kind":"encode"}`, `schema: job: field "v": missing`},
		{"future version", `{"v":2,"kind":"encode"}`, `field "v": version 2 not supported`},
		{"missing kind", `{"v":1}`, `field "kind": missing`},
		{"unknown kind", `{"v":1,"kind":"explode"}`, `field "kind": unknown kind "explode"`},
		{"unknown field", `{"v":1,"kind":"encode","model":"fm32","image_hash":"` + hashA + `","password":"x"}`, `schema: encode job: field "password": unknown field`},
		{"wrong type", `{"v":1,"kind":"decode","model":"fm32","image_hash":"` + hashA + `","steps":"ten","x_t":"encoded"}`, `schema: decode job: field "steps": want int`},
		{"steps out of range", `{"v":1,"kind":"decode","model":"fm32","image_hash":"` + hashA + `","steps":5000,"x_t":"encoded"}`, `field "steps": 5000 out of range 1..1000`},
		{"bad x_t", `{"v":1,"kind":"decode","model":"fm32","image_hash":"` + hashA + `","steps":10,"x_t":"zeros"}`, `field "x_t": "zeros" not one of`},
		{"model with slash", `{"v":1,"kind":"encode","model":"a/b","image_hash":"` + hashA + `"}`, `field "model": name "a/b"`},
		{"model missing", `{"v":1,"kind":"sample","count":1,"steps":10,"latent_steps":10}`, `schema: sample job: field "model": missing`},
		{"manipulate without scale", `{"v":1,"kind":"manipulate","model":"m","image_hash":"` + hashA + `","attribute":"smiling","steps":10}`, `field "scale": missing`},
		{"sample threshold without attribute", `{"v":1,"kind":"sample","model":"m","count":4,"steps":10,"latent_steps":10,"min_prob":0.9}`, `field "min_prob": given without an attribute`},
		{"sample threshold out of range", `{"v":1,"kind":"sample","model":"m","count":4,"steps":10,"latent_steps":10,"attribute":"bag","min_prob":1}`, `field "min_prob": 1: want a probability`},
		{"manipulate target and scale", `{"v":1,"kind":"manipulate","model":"m","image_hash":"` + hashA + `","attribute":"bag","scale":1,"target":"p95","steps":10}`, `field "scale": given with a target`},
		{"manipulate unknown target", `{"v":1,"kind":"manipulate","model":"m","image_hash":"` + hashA + `","attribute":"bag","target":"max","steps":10}`, `field "target": "max" not one of`},
		{"manipulate rounds without target", `{"v":1,"kind":"manipulate","model":"m","image_hash":"` + hashA + `","attribute":"bag","scale":1,"rounds":3,"steps":10}`, `field "rounds": 3 without a target`},
		{"manipulate too many rounds", `{"v":1,"kind":"manipulate","model":"m","image_hash":"` + hashA + `","attribute":"bag","target":"p95","rounds":9,"steps":10}`, `field "rounds": 9 out of range 0..8`},
		{"regenerate rounds of a scale", `{"v":1,"kind":"regenerate","model":"m","image_hash":"` + hashA + `","op":"manipulate","attribute":"bag","scale":1,"rounds":2,"steps":10,"generation":1}`, `field "rounds": 2 without a target`},
		{"regenerate decode with negative rounds", `{"v":1,"kind":"regenerate","model":"m","image_hash":"` + hashA + `","op":"decode","rounds":-1,"steps":10,"generation":1}`, `field "rounds": -1, but op is decode`},
		{"regenerate decode with rounds", `{"v":1,"kind":"regenerate","model":"m","image_hash":"` + hashA + `","op":"decode","rounds":2,"steps":10,"generation":1}`, `field "rounds": 2, but op is decode`},
		{"regenerate decode with target", `{"v":1,"kind":"regenerate","model":"m","image_hash":"` + hashA + `","op":"decode","target":"p95","steps":10,"generation":1}`, `field "target": set, but op is decode`},
		{"regenerate target and scale", `{"v":1,"kind":"regenerate","model":"m","image_hash":"` + hashA + `","op":"manipulate","attribute":"bag","scale":1,"target":"median","steps":10,"generation":1}`, `field "scale": given with a target`},
		{"interpolate one frame", `{"v":1,"kind":"interpolate","model":"m","image_hash_a":"` + hashA + `","image_hash_b":"` + hashB + `","frames":1,"steps":10}`, `field "frames": 1 out of range 2..256`},
		{"regenerate bad op", `{"v":1,"kind":"regenerate","model":"m","image_hash":"` + hashA + `","op":"sample","steps":10,"generation":1}`, `field "op": "sample" not one of`},
		{"regenerate manipulate needs attribute", `{"v":1,"kind":"regenerate","model":"m","image_hash":"` + hashA + `","op":"manipulate","scale":1,"steps":10,"generation":1}`, `field "attribute": missing`},
		{"source with control character", `{"v":1,"kind":"encode","model":"m","image_hash":"` + hashA + `","source":"a\u0000b"}`, `field "source": contains control characters`},
		{"not JSON", `{"v":1,`, `schema: job:`},
		{"trailing data", `{"v":1,"kind":"encode","model":"m","image_hash":"` + hashA + `"} {}`, `after top-level value`},
		{"empty", ``, `schema: job:`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			j, err := Parse([]byte(tt.msg))
			if err == nil {
				t.Fatalf("Parse(%s) = %#v, want error containing %q", tt.msg, j, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%s) error = %q, want it to contain %q", tt.msg, err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%s) error %q does not match ErrInvalid", tt.msg, err)
			}
		})
	}
}

func TestParseFieldError(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte(`{"v":1,"kind":"encode","model":"fm32"}`))
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a *FieldError", err)
	}
	if fe.Kind != KindEncode || fe.Field != "image_hash" || fe.Problem != "missing" {
		t.Errorf("FieldError = %+v, want encode/image_hash/missing", *fe)
	}
}

func TestMarshalParseRoundTrip(t *testing.T) {
	t.Parallel()
	jobs := []Job{
		&Encode{Header: Header{Model: "fm32", Batch: "b-1"}, ImageHash: hashA, Source: "train/00001.png"},
		&Decode{Header: Header{Model: "fm32"}, ImageHash: hashA, Steps: 20, Noise: "random", Seed: 7},
		&Manipulate{Header: Header{Model: "fm32"}, ImageHash: hashA, Attribute: "sneaker", Scale: -0.3, Steps: 50},
		&Manipulate{Header: Header{Model: "fm32"}, ImageHash: hashA, Attribute: "sneaker", Target: "p95", Steps: 50},
		&Manipulate{Header: Header{Model: "fm32"}, ImageHash: hashA, Attribute: "sneaker", Target: "p95", Steps: 50, Rounds: 3},
		&Interpolate{Header: Header{Model: "fm32"}, ImageHashA: hashA, ImageHashB: hashB, Frames: 9, Steps: 10},
		&Sample{Header: Header{Model: "fm32"}, Count: 16, Steps: 20, LatentSteps: 50, Seed: 1, Attribute: "bag"},
		&Sample{Header: Header{Model: "fm32"}, Count: 16, Steps: 20, LatentSteps: 50, Seed: 1, Attribute: "bag", MinProb: 0.9},
		&Regenerate{Header: Header{Model: "fm32"}, ImageHash: hashA, Op: KindManipulate, Attribute: "bag", Scale: 1, Steps: 20, Generation: 3},
		&Regenerate{Header: Header{Model: "fm32"}, ImageHash: hashA, Op: KindManipulate, Attribute: "bag", Target: "p90", Steps: 20, Generation: 3},
		&Regenerate{Header: Header{Model: "fm32"}, ImageHash: hashA, Op: KindManipulate, Attribute: "bag", Target: "p90", Rounds: 3, Steps: 20, Generation: 3},
	}
	seen := map[string]bool{}
	for _, j := range jobs {
		data, err := Marshal(j)
		if err != nil {
			t.Fatalf("Marshal(%T): %v", j, err)
		}
		if !strings.HasPrefix(string(data), `{"v":1,"kind":"`+string(j.JobKind())+`"`) {
			t.Errorf("Marshal(%T) = %s, want it to start with v and kind", j, data)
		}
		back, err := Parse(data)
		if err != nil {
			t.Fatalf("Parse(Marshal(%T)) = %v; message %s", j, err, data)
		}
		if back.DedupKey() != j.DedupKey() || back.Meta() != j.Meta() {
			t.Errorf("round trip of %T: dedup %q meta %+v, want %q %+v", j, back.DedupKey(), back.Meta(), j.DedupKey(), j.Meta())
		}
		if seen[j.DedupKey()] {
			t.Errorf("dedup key %q used twice", j.DedupKey())
		}
		seen[j.DedupKey()] = true
	}
}

// A threshold of 0.5 is what an absent one means: the same job, the same key.
func TestSampleMinProbKey(t *testing.T) {
	t.Parallel()
	base := Sample{Header: Header{Model: "m"}, Count: 4, Steps: 10, LatentSteps: 10, Seed: 1, Attribute: "bag"}
	half, strict := base, base
	half.MinProb, strict.MinProb = 0.5, 0.9
	if base.DedupKey() != half.DedupKey() || base.DedupKey() == strict.DedupKey() {
		t.Errorf("keys: none %q, 0.5 %q, 0.9 %q", base.DedupKey(), half.DedupKey(), strict.DedupKey())
	}
}

// One round is what an absent count means: the same job, the same key, and a message without the field (which
// workers from before it accept).
func TestManipulateRoundsKey(t *testing.T) {
	t.Parallel()
	base := Manipulate{Header: Header{Model: "m"}, ImageHash: hashA, Attribute: "bag", Target: "p95", Steps: 10}
	one, three := base, base
	one.Rounds, three.Rounds = 1, 3
	if base.DedupKey() != one.DedupKey() || base.DedupKey() == three.DedupKey() {
		t.Errorf("keys: none %q, 1 %q, 3 %q", base.DedupKey(), one.DedupKey(), three.DedupKey())
	}
	rb := Regenerate{Header: Header{Model: "m"}, ImageHash: hashA, Op: KindManipulate, Attribute: "bag", Target: "p95", Steps: 10, Generation: 1}
	rOne, rThree := rb, rb
	rOne.Rounds, rThree.Rounds = 1, 3
	if rb.DedupKey() != rOne.DedupKey() || rb.DedupKey() == rThree.DedupKey() {
		t.Errorf("regenerate keys: none %q, 1 %q, 3 %q", rb.DedupKey(), rOne.DedupKey(), rThree.DedupKey())
	}
	for _, j := range []Job{&one, &rOne, &three, &rThree} {
		data, err := Marshal(j)
		if err != nil {
			t.Fatal(err)
		}
		if has, want := strings.Contains(string(data), `"rounds"`), j == Job(&three) || j == Job(&rThree); has != want {
			t.Errorf("%s: rounds in the message %v, want %v", data, has, want)
		}
	}
	if one.Rounds != 1 || rOne.Rounds != 1 {
		t.Error("Marshal changed the job it was given")
	}
}

func TestMarshalValidates(t *testing.T) {
	t.Parallel()
	_, err := Marshal(&Encode{Header: Header{Model: "fm32"}, ImageHash: "abc"})
	if err == nil || !strings.Contains(err.Error(), `field "image_hash"`) {
		t.Fatalf("Marshal of a bad job: error %v, want one naming image_hash", err)
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	if got := Subject(KindEncode); got != "dae.jobs.encode" {
		t.Errorf("Subject(encode) = %q", got)
	}
	if got := DeadSubject(KindSample); got != "dae.dead.sample" {
		t.Errorf("DeadSubject(sample) = %q", got)
	}
	if got := Consumer(KindDecode); got != "workers-decode" {
		t.Errorf("Consumer(decode) = %q", got)
	}
}

func TestObjectKeys(t *testing.T) {
	t.Parallel()
	key, err := ImageKey(hashA)
	if err != nil || key != "images/9f/"+hashA {
		t.Fatalf("ImageKey = %q, %v", key, err)
	}
	if _, err := ImageKey("../../x"); err == nil {
		t.Error("ImageKey accepted a path")
	}
	out, err := OutputKey(KindDecode, "decode/fm32/../../x", "png")
	if err != nil || CheckObjectKey(out) != nil || strings.Contains(out, "..") {
		t.Errorf("OutputKey = %q, %v; want a checked key", out, err)
	}
	if _, err := OutputKey(KindDecode, "k", "exe"); err == nil {
		t.Error("OutputKey accepted extension exe")
	}
	ck, err := CheckpointKey("fm32-v1")
	if err != nil || ck != "checkpoints/fm32-v1.safetensors" || CheckObjectKey(ck) != nil {
		t.Errorf("CheckpointKey = %q, %v", ck, err)
	}
	for _, bad := range []string{"", "images/../secret", "images//x", "/images/x", "other/x", "images/A", "images/x y", "images/.hidden"} {
		if err := CheckObjectKey(bad); err == nil {
			t.Errorf("CheckObjectKey(%q) = nil, want an error", bad)
		}
	}
}
