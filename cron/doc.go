// Package cron runs the scheduled work of the system on go-co-op/gocron: retraining attribute classifiers on the
// labelled latents of each model, scoring every latent with the promoted classifiers (and sketching it for
// neighbour search), and enqueueing saved regeneration definitions.
//
// Any number of replicas may run the same configuration. Each scheduled run takes a Postgres advisory lock named
// after the job and claims its tick (the scheduled time, see Job.Tick) in cron_runs, so every job runs once per
// tick across replicas, and a replica that dies mid-run leaves the tick to the next one to take the lock. The
// package holds no SQL: it goes through store.
package cron
