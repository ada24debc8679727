package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
)

func init() {
	register(command{"migrate", "apply database migrations (up) or list them (status)", runMigrate})
}

func runMigrate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: dae migrate [up|status]\n\nup (the default) applies pending migrations; status lists every migration and when it was applied.")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	verb := "up"
	switch fs.NArg() {
	case 0:
	case 1:
		verb = fs.Arg(0)
	default:
		fs.Usage()
		return fmt.Errorf("%w: too many arguments", errUsage)
	}
	if verb != "up" && verb != "status" {
		fs.Usage()
		return fmt.Errorf("%w: unknown action %q", errUsage, verb)
	}
	st, err := openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if verb == "up" {
		applied, err := st.Migrate(ctx)
		if err != nil {
			return err
		}
		if len(applied) == 0 {
			fmt.Println("database is up to date")
		}
		for _, m := range applied {
			fmt.Printf("applied %05d %s\n", m.Version, m.Name)
		}
		return nil
	}
	ms, err := st.Migrations(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "VERSION\tFILE\tAPPLIED")
	for _, m := range ms {
		at := "pending"
		if m.Applied {
			at = m.AppliedAt.Local().Format("2006-01-02 15:04:05")
		}
		fmt.Fprintf(w, "%05d\t%s\t%s\n", m.Version, m.Name, at)
	}
	return w.Flush()
}
