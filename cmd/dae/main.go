// Command dae is the one binary of the diffusion-autoencoder system: model commands (train, encode, decode, …),
// the local stack (up, migrate), producers (enqueue), workers, scheduled jobs (cron) and queries.
//
// Each command lives in its own file and registers itself in init; main only dispatches.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one `dae <name>` subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

// registry holds the subcommands; it is written only by init functions, before main runs.
var registry = map[string]command{}

func register(c command) {
	if _, dup := registry[c.name]; dup {
		panic("dae: command registered twice: " + c.name)
	}
	registry[c.name] = c
}

// errUsage marks an error that is the caller's fault; main prints it without a stack of wrapping.
var errUsage = errors.New("usage")

func usage() {
	fmt.Fprintln(os.Stderr, "usage: dae <command> [flags] [args]\n\ncommands:")
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-14s %s\n", n, registry[n].summary)
	}
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		os.Exit(2)
	}
	c, ok := registry[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "dae: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.run(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "dae %s: %v\n", c.name, err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
