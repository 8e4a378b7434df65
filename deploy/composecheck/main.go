// composecheck loads a compose file the way Docker Compose does and prints the resolved
// project, or fails with the loader's error.
//
// It is a thin wrapper around compose-go (the library Docker Compose itself is built on),
// so CI checks docker-compose.yml with the real loader rather than with our own reading of
// the specification: validation against the Compose Specification's JSON Schema (the copy
// compiled into compose-go), interpolation of ${VAR:-default}, merging of YAML anchors,
// normalization, and the consistency checks `docker compose config` runs (depends_on
// targets exist, named volumes are declared, ...).
//
// Usage:
//
//	composecheck [-profile NAME]... [-format json|yaml] FILE
//
// Profiles work as in Docker Compose: without -profile only the services without a profile
// are enabled; -profile '*' enables all of them (what CI checks). Variables are interpolated from the process environment only: unlike `docker compose`
// it does not read a .env file, so the result does not depend on untracked local files.
// Exit status: 0 and the resolved project on stdout; 1 and the error on stderr; 2 on usage.
// Built by scripts/setup-composecheck.sh; used by tests/unit/test_compose.py.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

// profiles collects repeated -profile flags.
type profiles []string

func (p *profiles) String() string     { return fmt.Sprint(*p) }
func (p *profiles) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	var selected profiles
	flag.Var(&selected, "profile", "enable this profile (repeatable; '*' enables all)")
	format := flag.String("format", "json", "output format of the resolved project: json or yaml")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-profile NAME]... [-format json|yaml] FILE")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 || (*format != "json" && *format != "yaml") {
		flag.Usage()
		os.Exit(2)
	}
	out, err := resolve(flag.Arg(0), selected, *format)
	if err != nil {
		fmt.Fprintf(os.Stderr, "composecheck: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}

// resolve loads file with the given profiles and returns the resolved project.
func resolve(file string, enabled []string, format string) ([]byte, error) {
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, err
	}
	options, err := cli.NewProjectOptions(
		[]string{abs},
		// Relative paths (build contexts) resolve against the file's directory, as in Compose.
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithOsEnv,
		cli.WithProfiles(enabled),
		// Schema validation, interpolation, normalization and the consistency checks are the
		// loader's defaults; set explicitly so that nobody turns them off by accident.
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
	)
	if err != nil {
		return nil, err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return nil, err
	}
	if format == "yaml" {
		return project.MarshalYAML()
	}
	return project.MarshalJSON()
}
