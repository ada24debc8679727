package schema_test

import (
	"errors"
	"fmt"

	"dae/schema"
)

func ExampleParse() {
	msg := []byte(`{"v":1,"kind":"encode","model":"fm32","batch":"archive-1",` +
		`"image_hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}`)
	job, err := schema.Parse(msg)
	if err != nil {
		fmt.Println(err)
		return
	}
	enc := job.(*schema.Encode)
	key, _ := schema.ImageKey(enc.ImageHash)
	fmt.Println(schema.Subject(job.JobKind()), schema.Consumer(job.JobKind()))
	fmt.Println(job.DedupKey())
	fmt.Println(key)

	_, err = schema.Parse([]byte(`{"v":1,"kind":"encode","model":"fm32"}`))
	fmt.Println(err, errors.Is(err, schema.ErrInvalid))
	// Output:
	// dae.jobs.encode workers-encode
	// encode/fm32/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
	// images/9f/9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
	// schema: encode job: field "image_hash": missing true
}
