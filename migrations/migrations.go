// Package migrations holds the database schema as numbered SQL files (goose format), embedded in the binary.
//
// It only carries the files; store applies them. A file, once committed, is never edited: change the schema with a
// new, higher-numbered file.
package migrations

import "embed"

// FS holds the migration files, named NNNNN_what.sql.
//
//go:embed *.sql
var FS embed.FS
