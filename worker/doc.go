// Package worker pulls jobs from NATS JetStream, runs the diffusion autoencoder on them and writes the results
// through the store, so that every accepted job ends done, failed with a stored reason, or dead (visible in SQL and
// on the dead-letter stream).
//
// Delivery is at least once and effects are idempotent: a redelivered job whose row is already final is only
// acknowledged, latents are inserted with ON CONFLICT DO NOTHING, and outputs are written under keys derived from
// the job's dedup key. Errors fall in two classes. Permanent ones (a bad image, an unknown model, a message that
// does not parse, a missing latent or classifier) fail the job at once with its reason and terminate the message.
// Anything else is transient (database, object store or broker unavailable): the message is released with an
// exponential delay, and the worker takes no more jobs until the store answers and accepts a probe write
// (store.ProbeWrites: a read-only database answers pings but fails every job); after schema.MaxDeliver
// deliveries the job goes to the dead-letter stream, from which the dead
// recorder marks the job dead in SQL. A job whose workers keep stopping or crashing before they settle it is
// dead-lettered when it is received for the schema.MaxReceipts-th time (JetStream itself redelivers without limit,
// so no job is left on the stream undelivered and `running` in SQL).
//
// The worker knows nothing of how jobs are produced, and speaks SQL and S3 only through store.
package worker
