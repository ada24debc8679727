// Package store is the system's memory: Postgres (through a pgx pool) for models, batches, images, latents, jobs,
// labels, classifiers, scores and outputs, and S3-compatible object storage (through minio-go) for image and
// checkpoint bytes. It is the only package that speaks SQL or S3.
//
// Every write is idempotent, so a job redelivered after a crash writes nothing twice: rows are inserted with
// ON CONFLICT on their natural keys, and objects are addressed by content or by the job's dedup key.
//
// The store knows nothing of tensors or of the model: a latent is a []float32 z_sem plus a []float32 x_T and its
// shape. It never builds SQL from input (every value is a bind parameter) and refuses object keys that
// schema.CheckObjectKey does not accept. Credentials come from Config, never from data.
package store
