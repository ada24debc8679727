// Package schema is the wire contract between producers and workers: the versioned JSON job messages and their
// validation, the NATS subject, stream and consumer names, and the rules for names and object keys built from
// job input.
//
// It imports only the standard library. It must not talk to a server, hold secrets (credentials come from the
// environment, never from a job message) or know anything about the model beyond the names a job carries.
package schema
