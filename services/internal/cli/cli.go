// Package cli implements the batchq command and the single-service
// commands: flag parsing, logging and the wiring of the batchq packages
// into processes. Each command function returns the process exit code.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Exit codes of every command.
const (
	ExitOK      = 0
	ExitFailure = 1
	// ExitUsage reports invalid flags or arguments, as the flag package does.
	ExitUsage = 2
)

// Env is the standard output, standard error, environment and context of
// a command.
type Env struct {
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads an environment variable.
	Getenv func(string) string
	// Context, when set, stops long-running commands when it ends, as
	// SIGINT and SIGTERM do. Tests use it.
	Context context.Context
}

// OSEnv returns the environment of the running process.
func OSEnv() Env {
	return Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Context: context.Background()}
}

func (e Env) context() context.Context {
	if e.Context == nil {
		return context.Background()
	}
	return e.Context
}

const mainUsage = `Usage: batchq COMMAND [flags] [arguments]

batchq runs batches and chains of jobs on NATS JetStream.

Commands:
  dev           run NATS, the coordinator, executors and compensators in one process
  demo          run a built-in demo (wordcount, chain or saga) in one process
  coordinator   run the coordinator against a NATS server
  executor      run an executor with the demo jobs against a NATS server
  compensator   run a compensator with the demo compensations against a NATS server
  status        print the state of a batch as JSON
  prune         remove batches that finished before a cutoff

Run "batchq COMMAND -h" to see the flags of a command.
`

// Main runs the batchq command with its arguments, without the program
// name.
func Main(env Env, args []string) int {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, mainUsage)
		return ExitUsage
	}
	command, rest := args[0], args[1:]
	switch command {
	case "dev":
		return Dev(env, "batchq dev", rest)
	case "demo":
		return Demo(env, "batchq demo", rest)
	case "coordinator":
		return Coordinator(env, "batchq coordinator", rest)
	case "executor":
		return Executor(env, "batchq executor", rest)
	case "compensator":
		return Compensator(env, "batchq compensator", rest)
	case "status":
		return Status(env, "batchq status", rest)
	case "prune":
		return Prune(env, "batchq prune", rest)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(env.Stdout, mainUsage)
		return ExitOK
	default:
		fmt.Fprintf(env.Stderr, "batchq: unknown command %q\n\n%s", command, mainUsage)
		return ExitUsage
	}
}

// newFlagSet returns a flag set that reports errors to env.Stderr and
// prints usage, a description and the flags on -h.
func newFlagSet(env Env, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nFlags:\n", strings.TrimRight(usage, "\n"))
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and returns the exit code to stop with, if any:
// ExitOK after -h and ExitUsage after an invalid flag.
func parseFlags(fs *flag.FlagSet, args []string) (code int, stop bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return ExitOK, true
	case err != nil:
		return ExitUsage, true
	}
	return ExitOK, false
}

// usageError prints a message about invalid input with a hint to -h and
// returns ExitUsage.
func usageError(env Env, name, format string, args ...any) int {
	fmt.Fprintf(env.Stderr, "%s: %s\nRun \"%s -h\" for usage.\n", name, fmt.Sprintf(format, args...), name)
	return ExitUsage
}

// failure prints an error that stopped a command and returns ExitFailure.
func failure(env Env, name string, err error) int {
	fmt.Fprintf(env.Stderr, "%s: %v\n", name, err)
	return ExitFailure
}

// newLogger returns a text logger to w at level.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// queueList is a repeatable --queue flag.
type queueList []string

func (q *queueList) String() string { return strings.Join(*q, ",") }

func (q *queueList) Set(name string) error {
	*q = append(*q, name)
	return nil
}
