package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/store"
	"github.com/oklog/run"
)

// DefaultNATSURL is the NATS server that the service commands connect to
// when neither --nats-url nor BATCHQ_NATS_URL is set.
const DefaultNATSURL = "nats://127.0.0.1:4222"

// DefaultRetention is how long the coordinator commands keep finished
// batches unless --retention says otherwise: a week, as long as the events
// stream keeps the events that describe them.
const DefaultRetention = 7 * 24 * time.Hour

// openTimeout bounds the start-up requests to NATS, such as creating the
// store's bucket.
const openTimeout = 30 * time.Second

// addNATSFlag registers --nats-url, whose default comes from
// BATCHQ_NATS_URL.
func addNATSFlag(fs *flag.FlagSet, env Env, url *string) {
	def := DefaultNATSURL
	if env.Getenv != nil && env.Getenv("BATCHQ_NATS_URL") != "" {
		def = env.Getenv("BATCHQ_NATS_URL")
	}
	fs.StringVar(url, "nats-url", def, "URL of the NATS server, by default from the environment variable BATCHQ_NATS_URL")
}

// addLogFlag registers --log-level.
func addLogFlag(fs *flag.FlagSet, level *slog.Level) {
	fs.TextVar(level, "log-level", slog.LevelInfo, "minimum level of the logs written to stderr: debug, info, warn or error")
}

// addWorkerFlags registers the flags of workerOptions.
func addWorkerFlags(fs *flag.FlagSet, o *workerOptions, queues *queueList) {
	fs.Var(queues, "queue", "queue to run, repeatable for several queues (default \"default\")")
	fs.IntVar(&o.concurrency, "concurrency", runtime.NumCPU(), "jobs that run at once per queue, by default one per CPU")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", executor.DefaultDrainTimeout, "how long a stop waits for running jobs before it cancels them and leaves them for redelivery")
}

// finishWorkerFlags fills in the default queue.
func finishWorkerFlags(o *workerOptions, queues queueList) {
	o.queues = queues
	if len(o.queues) == 0 {
		o.queues = []string{batchq.DefaultQueue}
	}
}

const coordinatorUsage = `Usage: %s [flags]

Runs the coordinator against a NATS server with JetStream. The coordinator
stores batch state, advances batches and chains as outcomes arrive, and
serves the read API that clients and "batchq status" use. Several
coordinators may run side by side on one store.
`

// Coordinator runs the coordinator command.
func Coordinator(env Env, name string, args []string) int {
	fs := newFlagSet(env, name, fmt.Sprintf(coordinatorUsage, name))
	var (
		url       string
		level     slog.Level
		stores    storeOptions
		retention time.Duration
		metrics   string
	)
	addNATSFlag(fs, env, &url)
	addStoreFlags(fs, env, &stores)
	addMetricsFlag(fs, &metrics)
	fs.DurationVar(&retention, "retention", DefaultRetention, "how long finished batches are kept before they are removed, or 0 to keep them")
	addLogFlag(fs, &level)
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(env, name, "unexpected argument %q; this command takes flags only", fs.Arg(0))
	}
	if err := stores.validate(); err != nil {
		return usageError(env, name, "%v", err)
	}
	if retention < 0 {
		return usageError(env, name, "invalid --retention %s: give 0 to keep batches or a positive duration", retention)
	}

	log := newLogger(env.Stderr, level)
	ms, err := newMetricsServer(metrics)
	if err != nil {
		return usageError(env, name, "%v", err)
	}
	var st store.Store
	code := runService(env, name, url, log, ms, func(connect connector) ([]part, error) {
		nc, err := connect("batchq-store")
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(env.context(), openTimeout)
		defer cancel()
		if st, err = openStore(ctx, nc, stores, log.With("service", "store")); err != nil {
			return nil, err
		}
		p, err := newCoordinatorPart(connect, st, retention, ms.registerer(), log)
		if err != nil {
			return nil, err
		}
		return []part{p}, nil
	})
	if st != nil {
		if err := st.Close(); err != nil {
			log.Warn("close the store", "error", err)
		}
	}
	return code
}

const executorUsage = `Usage: %s [flags]

Runs an executor per queue against a NATS server with JetStream. The
executors run the demo jobs (wordcount.*, chain.* and saga.*), which read
files on this machine.
`

// Executor runs the executor command.
func Executor(env Env, name string, args []string) int {
	return runWorkers(env, name, fmt.Sprintf(executorUsage, name), args, newExecutorParts)
}

const compensatorUsage = `Usage: %s [flags]

Runs a compensator per queue against a NATS server with JetStream. The
compensators run the compensation jobs of the saga demo (saga.release_stock,
saga.refund_card and saga.cancel_shipment).
`

// Compensator runs the compensator command.
func Compensator(env Env, name string, args []string) int {
	return runWorkers(env, name, fmt.Sprintf(compensatorUsage, name), args, newCompensatorParts)
}

// runWorkers runs the executor or compensator command.
func runWorkers(env Env, name, usage string, args []string, build func(connector, workerOptions, *slog.Logger) ([]part, error)) int {
	fs := newFlagSet(env, name, usage)
	var (
		url     string
		level   slog.Level
		workers workerOptions
		queues  queueList
		metrics string
	)
	addNATSFlag(fs, env, &url)
	addWorkerFlags(fs, &workers, &queues)
	addMetricsFlag(fs, &metrics)
	addLogFlag(fs, &level)
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(env, name, "unexpected argument %q; this command takes flags only", fs.Arg(0))
	}
	finishWorkerFlags(&workers, queues)
	if err := workers.validate(); err != nil {
		return usageError(env, name, "%v", err)
	}

	log := newLogger(env.Stderr, level)
	ms, err := newMetricsServer(metrics)
	if err != nil {
		return usageError(env, name, "%v", err)
	}
	workers.metrics = ms.registerer()
	return runService(env, name, url, log, ms, func(connect connector) ([]part, error) {
		return build(connect, workers, log)
	})
}

// runService connects to the NATS server at url, builds the parts and runs
// them, with the metrics server when ms is set, until a signal or a failed
// part stops them all.
func runService(env Env, name, url string, log *slog.Logger, ms *metricsServer, build func(connector) ([]part, error)) int {
	dialer := &natsDialer{url: url, log: log}
	defer dialer.close()
	parts, err := build(dialer.connect)
	if err != nil {
		ms.close()
		return failure(env, name, err)
	}

	var g run.Group
	addStopActors(&g, env)
	for _, p := range parts {
		addPart(&g, p)
	}
	if ms != nil {
		log.Info("serving metrics", "url", "http://"+ms.listener.Addr().String()+"/metrics")
		addPart(&g, ms.part())
	}
	return logStop(env, log, g.Run())
}

const statusUsage = `Usage: %s [flags] BATCH_ID

Prints the state of a batch as JSON: its status, job counts, progress,
compensation counts and callbacks. A coordinator must be running.
`

// Status runs the status command.
func Status(env Env, name string, args []string) int {
	fs := newFlagSet(env, name, fmt.Sprintf(statusUsage, name))
	var (
		url     string
		timeout time.Duration
	)
	addNATSFlag(fs, env, &url)
	fs.DurationVar(&timeout, "timeout", batchq.DefaultRequestTimeout, "how long to wait for the coordinator's reply")
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	ids := fs.Args()
	if len(ids) > 1 {
		// Accept flags after the batch id too, as in "status ID --timeout 1s".
		if code, stop := parseFlags(fs, ids[1:]); stop {
			return code
		}
		ids = append(ids[:1], fs.Args()...)
	}
	switch {
	case len(ids) == 0:
		return usageError(env, name, "missing BATCH_ID; give the id that Dispatch returned")
	case len(ids) > 1:
		return usageError(env, name, "too many arguments %q; give one BATCH_ID", ids)
	case timeout <= 0:
		return usageError(env, name, "invalid --timeout %s: give a positive duration such as 10s", timeout)
	}

	dialer := &natsDialer{url: url, log: newLogger(env.Stderr, slog.LevelWarn)}
	defer dialer.close()
	nc, err := dialer.connect("batchq-status")
	if err != nil {
		return failure(env, name, err)
	}
	client, err := batchq.NewClient(nc, batchq.Config{RequestTimeout: timeout})
	if err != nil {
		return failure(env, name, err)
	}
	info, err := client.Batch(env.context(), ids[0])
	if errors.Is(err, batchq.ErrBatchNotFound) {
		return failure(env, name, fmt.Errorf("batch %q not found; check the id, and note that batches are removed once their retention has passed", ids[0]))
	}
	if err != nil {
		return failure(env, name, err)
	}
	out, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return failure(env, name, err)
	}
	fmt.Fprintf(env.Stdout, "%s\n", out)
	return ExitOK
}

// logStop logs why a service process stopped and returns its exit code.
func logStop(env Env, log *slog.Logger, err error) int {
	switch {
	case err == nil:
		log.Info("stopped")
	case requestedStop(env, err):
		log.Info("stopped", "reason", err.Error())
	default:
		log.Error("stopped after a failure", "error", err)
		return ExitFailure
	}
	return ExitOK
}
