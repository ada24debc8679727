package main

import (
	"flag"
	"fmt"
	"math"
	"strings"
)

// Checks of command lines shared by the commands: each error is a usage error naming the flag or the arguments.

// noArgs refuses positional arguments given to a command that takes none. fs.Parse stops at the first of them, so
// without this check they, and every flag after them, would be silently ignored.
func noArgs(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, args)
	}
	return nil
}

// givenFlags returns, as "--name", those of names that were set on the command line (defaults not included).
func givenFlags(fs *flag.FlagSet, names ...string) []string {
	var given []string
	fs.Visit(func(f *flag.Flag) {
		for _, n := range names {
			if f.Name == n {
				given = append(given, "--"+n)
			}
		}
	})
	return given
}

// onlyWith refuses the flags of names that were set although what they apply to (cond, described by with) is not:
// they would be silently ignored.
func onlyWith(fs *flag.FlagSet, cond bool, with string, names ...string) error {
	if cond {
		return nil
	}
	given := givenFlags(fs, names...)
	switch len(given) {
	case 0:
		return nil
	case 1:
		return fmt.Errorf("%w: %s applies only with %s", errUsage, given[0], with)
	}
	return fmt.Errorf("%w: %s apply only with %s", errUsage, strings.Join(given, ", "), with)
}

// atLeast refuses an integer flag below lo.
func atLeast(name string, v, lo int) error {
	if v < lo {
		return fmt.Errorf("%w: --%s %d: want at least %d", errUsage, name, v, lo)
	}
	return nil
}

// within refuses an integer flag outside lo..hi.
func within(name string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%w: --%s %d: want %d..%d", errUsage, name, v, lo, hi)
	}
	return nil
}

// positive refuses a float flag that is not a finite number above 0.
func positive(name string, v float64) error {
	if !(v > 0) || math.IsInf(v, 0) {
		return fmt.Errorf("%w: --%s %v: want a finite number above 0", errUsage, name, v)
	}
	return nil
}

// nonNegative refuses a float flag that is not a finite number ≥ 0.
func nonNegative(name string, v float64) error {
	if !(v >= 0) || math.IsInf(v, 0) {
		return fmt.Errorf("%w: --%s %v: want a finite number ≥ 0", errUsage, name, v)
	}
	return nil
}

// firstError returns the first of errs that is not nil, so that a command checks its flags in one statement.
func firstError(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
