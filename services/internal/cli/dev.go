package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/batchq/batchq/internal/embedded"
	"github.com/oklog/run"
)

const devUsage = `Usage: %s [flags]

Runs everything batchq needs in one process: a NATS server with JetStream
on 127.0.0.1, the coordinator with the KV store (or Postgres, with
--database-url), and an executor and a
compensator per queue with the demo jobs. Other processes connect at the
NATS URL that it logs at start. SIGINT or SIGTERM stops it. Running jobs
then get --drain-timeout to finish, and jobs still running after that are
redelivered at the next start.
`

// Dev runs the dev command.
func Dev(env Env, name string, args []string) int {
	fs := newFlagSet(env, name, fmt.Sprintf(devUsage, name))
	var (
		dataDir   string
		sync      embedded.SyncPolicy
		port      int
		retention = fs.Duration("retention", DefaultRetention, "how long finished batches are kept before they are removed, or 0 to keep them")
		verbose   = fs.Bool("verbose", false, "also write the NATS server's own log to stderr")
		workers   workerOptions
		queues    queueList
		level     slog.Level
		stores    storeOptions
		metrics   string
	)
	fs.StringVar(&dataDir, "data", defaultDataDir(), "directory for the JetStream files, by default batchq-data in the user cache directory")
	fs.Var(&sync, "sync", "when JetStream syncs its files to disk: \"always\" after every write, or an interval such as 2m or 10s (default 2m0s, the NATS server default)")
	fs.IntVar(&port, "port", embedded.DefaultPort, "TCP port of the NATS server on 127.0.0.1, or -1 for a free port")
	addWorkerFlags(fs, &workers, &queues)
	addStoreFlags(fs, env, &stores)
	addMetricsFlag(fs, &metrics)
	addLogFlag(fs, &level)
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if err := stores.validate(); err != nil {
		return usageError(env, name, "%v", err)
	}
	if fs.NArg() > 0 {
		return usageError(env, name, "unexpected argument %q; this command takes flags only", fs.Arg(0))
	}
	finishWorkerFlags(&workers, queues)
	if err := workers.validate(); err != nil {
		return usageError(env, name, "%v", err)
	}
	if port != embedded.RandomPort && (port < 1 || port > 65535) {
		return usageError(env, name, "invalid --port %d: give 1 to 65535, or -1 for a free port", port)
	}
	if *retention < 0 {
		return usageError(env, name, "invalid --retention %s: give 0 to keep batches or a positive duration", *retention)
	}
	if dataDir == "" {
		return usageError(env, name, "missing --data: this user has no cache directory to put the default in, so pass --data DIR")
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return failure(env, name, fmt.Errorf("create the data directory: %w; pass another --data directory", err))
	}

	log := newLogger(env.Stderr, level)
	ms, err := newMetricsServer(metrics)
	if err != nil {
		return usageError(env, name, "%v", err)
	}
	workers.metrics = ms.registerer()
	s, err := startStack(env.context(), stackOptions{
		server:    embedded.Config{Dir: dataDir, Port: port, Sync: sync, Verbose: *verbose},
		workers:   workers,
		stores:    stores,
		retention: *retention,
		log:       log,
	})
	if err != nil {
		ms.close()
	}
	if errors.Is(err, embedded.ErrPortInUse) {
		return failure(env, name, fmt.Errorf("%w; pass another --port, or --port -1 for a free one", err))
	}
	if err != nil {
		return failure(env, name, err)
	}
	log.Info("NATS server listening; connect other processes with --nats-url", "url", s.server.ClientURL(), "data_dir", dataDir, "sync", sync.String(), "store", stores.name())

	var g run.Group
	addStopActors(&g, env)
	for _, p := range s.parts {
		addPart(&g, p)
	}
	if ms != nil {
		log.Info("serving metrics", "url", "http://"+ms.listener.Addr().String()+"/metrics")
		addPart(&g, ms.part())
	}
	runErr := g.Run()
	if err := s.close(); err != nil {
		log.Warn("close the store", "error", err)
	}
	return logStop(env, log, runErr)
}

// defaultDataDir returns batchq-data in the user cache directory, or ""
// when the user has none.
func defaultDataDir() string {
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(cache, "batchq-data")
}
