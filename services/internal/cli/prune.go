package cli

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

const pruneUsage = `Usage: %s --older-than DURATION [flags]

Removes batches that finished (completed, failed or cancelled) more than
DURATION ago, with their jobs, results and outbox messages. Running and
compensating batches are never removed. It prunes the Postgres store when
--database-url is set, and otherwise the KV store on the NATS server.
A coordinator started with --retention does the same on a schedule.
`

// Prune runs the prune command.
func Prune(env Env, name string, args []string) int {
	fs := newFlagSet(env, name, fmt.Sprintf(pruneUsage, name))
	var (
		url       string
		olderThan time.Duration
		stores    storeOptions
		level     slog.Level
	)
	addNATSFlag(fs, env, &url)
	addStoreFlags(fs, env, &stores)
	fs.DurationVar(&olderThan, "older-than", 0, "remove batches that finished longer ago than this, for example 720h for 30 days (required)")
	addLogFlag(fs, &level)
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(env, name, "unexpected argument %q; this command takes flags only", fs.Arg(0))
	}
	if olderThan == 0 {
		return usageError(env, name, "missing --older-than: give the age of the batches to remove, such as 720h")
	}
	if olderThan < 0 {
		return usageError(env, name, "invalid --older-than %s: give a positive duration such as 720h", olderThan)
	}
	if err := stores.validate(); err != nil {
		return usageError(env, name, "%v", err)
	}

	log := newLogger(env.Stderr, level)
	ctx, cancel := context.WithTimeout(env.context(), 30*time.Minute)
	defer cancel()
	var nc *nats.Conn
	if stores.databaseURL == "" {
		dialer := &natsDialer{url: url, log: log}
		defer dialer.close()
		var err error
		if nc, err = dialer.connect("batchq-prune"); err != nil {
			return failure(env, name, err)
		}
	}
	st, err := openStore(ctx, nc, stores, log.With("service", "store"))
	if err != nil {
		return failure(env, name, err)
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Warn("close the store", "error", err)
		}
	}()
	cutoff := time.Now().Add(-olderThan)
	n, err := st.Prune(ctx, cutoff)
	if err != nil {
		return failure(env, name, fmt.Errorf("prune after removing %d batches: %w", n, err))
	}
	fmt.Fprintf(env.Stdout, "removed %d batches that finished before %s from the %s store\n", n, cutoff.UTC().Format(time.RFC3339), stores.name())
	return ExitOK
}
