package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/internal/demo"
	"github.com/batchq/batchq/internal/embedded"
	"github.com/oklog/run"
	"golang.org/x/term"
)

const demoUsage = `Usage: %s wordcount|chain|saga [flags]

Runs a built-in demo in one process: a NATS server with JetStream on a free
port of 127.0.0.1 with its files in a temporary directory, the coordinator,
an executor and a compensator. Everything stops and the temporary directory
is removed when the demo ends.

Demos:
  wordcount   count the words of every file under a directory, one job per
              file, and merge the counts in a completion callback
  chain       list a directory, pick its largest files, checksum them and
              write a report, in four chained steps that share a context
  saga        run an order whose shipping step fails, and watch the earlier
              steps being undone in reverse order

Run "%s DEMO -h" to see the flags of a demo.
`

// demoDrainTimeout bounds how long a demo waits for running jobs at exit.
const demoDrainTimeout = 5 * time.Second

// Demo runs the demo command.
func Demo(env Env, name string, args []string) int {
	usage := fmt.Sprintf(demoUsage, name, name)
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "wordcount":
		return demoWordCount(env, name+" wordcount", args[1:])
	case "chain":
		return demoChain(env, name+" chain", args[1:])
	case "saga":
		return demoSaga(env, name+" saga", args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(env.Stdout, usage)
		return ExitOK
	default:
		fmt.Fprintf(env.Stderr, "%s: unknown demo %q\n\n%s", name, args[0], usage)
		return ExitUsage
	}
}

// demoOptions are the flags that every demo has.
type demoOptions struct {
	verbose     bool
	concurrency int
}

func addDemoFlags(fs *flag.FlagSet, o *demoOptions, concurrency int) {
	fs.BoolVar(&o.verbose, "verbose", false, "write the services' logs from level info up to stderr, not only their errors")
	fs.IntVar(&o.concurrency, "concurrency", concurrency, "jobs that the executor runs at once")
}

const wordCountUsage = `Usage: %s [flags]

Counts the words of every regular file under --dir with one job per file;
symbolic links are not followed. A word is a run of the ASCII letters A-Z
and a-z, counted in lower case. The batch's completion callback merges the
counts. On a terminal, a progress bar is drawn on stderr while the jobs run.
`

func demoWordCount(env Env, name string, args []string) int {
	fs := newFlagSet(env, name, fmt.Sprintf(wordCountUsage, name))
	var (
		opts    demoOptions
		dir     = fs.String("dir", "", "directory to count (default the src directory of the Go installation, from \"go env GOROOT\")")
		top     = fs.Int("top", demo.DefaultTop, fmt.Sprintf("how many of the most frequent words to print, 1 to %d", demo.MaxTop))
		asJSON  = fs.Bool("json", false, "print one JSON object {\"files\", \"words\", \"top\", \"elapsed_ms\"} and nothing else on stdout")
		workers = 4 * runtime.NumCPU()
	)
	// Most of a count job's time is spent waiting for NATS round trips, not
	// CPU, so the default runs several jobs per CPU.
	addDemoFlags(fs, &opts, workers)
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(env, name, "unexpected argument %q; pass the directory with --dir", fs.Arg(0))
	}
	if *top < 1 || *top > demo.MaxTop {
		return usageError(env, name, "invalid --top %d: give a number from 1 to %d", *top, demo.MaxTop)
	}
	if opts.concurrency < 1 {
		return usageError(env, name, "invalid --concurrency %d: run at least 1 job at a time", opts.concurrency)
	}
	if *dir == "" {
		root, err := goRoot(env.context())
		if err != nil {
			return usageError(env, name, "no --dir given and %v; pass --dir DIR", err)
		}
		*dir = filepath.Join(root, "src")
	}
	if err := checkDir(*dir); err != nil {
		return usageError(env, name, "invalid --dir: %v", err)
	}

	progress := terminal(env.Stderr)
	return runDemo(env, name, opts, func(ctx context.Context, client *batchq.Client) error {
		summary, err := demo.WordCount(ctx, client, demo.WordCountOptions{Dir: *dir, Top: *top, Progress: progress})
		if err != nil {
			return err
		}
		if *asJSON {
			return summary.WriteJSON(env.Stdout)
		}
		return summary.WriteText(env.Stdout)
	})
}

const chainUsage = `Usage: %s [flags]

Runs a chain of four steps over the files directly inside --dir: list them,
pick the 5 largest, compute their SHA-256 checksums, and write a report.
Each step adds a key to the chain's context, and the next step reads it.
Prints each step with its result and the context keys it left, then the
final context.
`

func demoChain(env Env, name string, args []string) int {
	fs := newFlagSet(env, name, fmt.Sprintf(chainUsage, name))
	var (
		opts      demoOptions
		dir       = fs.String("dir", ".", "directory whose files the chain lists")
		reportDir = fs.String("report-dir", "", "directory for the report file (default a new temporary directory, which is kept)")
	)
	addDemoFlags(fs, &opts, runtime.NumCPU())
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(env, name, "unexpected argument %q; pass the directory with --dir", fs.Arg(0))
	}
	if opts.concurrency < 1 {
		return usageError(env, name, "invalid --concurrency %d: run at least 1 job at a time", opts.concurrency)
	}
	if err := checkDir(*dir); err != nil {
		return usageError(env, name, "invalid --dir: %v", err)
	}
	if *reportDir != "" {
		if err := checkDir(*reportDir); err != nil {
			return usageError(env, name, "invalid --report-dir: %v", err)
		}
	} else {
		tmp, err := os.MkdirTemp("", "batchq-chain-report-")
		if err != nil {
			return failure(env, name, fmt.Errorf("create a directory for the report: %w; pass --report-dir", err))
		}
		*reportDir = tmp
	}

	return runDemo(env, name, opts, func(ctx context.Context, client *batchq.Client) error {
		_, err := demo.Chain(ctx, client, demo.ChainOptions{Dir: *dir, ReportDir: *reportDir, Out: env.Stdout})
		return err
	})
}

const sagaUsage = `Usage: %s [flags]

Runs an order as a chain of four steps, each but the last with a
compensation: reserve stock (undo: release it), charge the card (undo:
refund it), ship the order (undo: cancel the shipment), send the receipt.
The shipping step fails for good, so the compensations run in reverse
order: the failed step's own first, then those of the steps before it.
Prints each step and compensation in the order the events stream recorded
them, then the batch's status and counts.
`

func demoSaga(env Env, name string, args []string) int {
	fs := newFlagSet(env, name, fmt.Sprintf(sagaUsage, name))
	var opts demoOptions
	ship := fs.Bool("ship", false, "let the shipping step succeed, so the order completes and nothing is undone")
	addDemoFlags(fs, &opts, runtime.NumCPU())
	if code, stop := parseFlags(fs, args); stop {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(env, name, "unexpected argument %q; this demo takes flags only", fs.Arg(0))
	}
	if opts.concurrency < 1 {
		return usageError(env, name, "invalid --concurrency %d: run at least 1 job at a time", opts.concurrency)
	}

	return runDemo(env, name, opts, func(ctx context.Context, client *batchq.Client) error {
		_, err := demo.Saga(ctx, client, demo.SagaOptions{Out: env.Stdout, Ship: *ship})
		return err
	})
}

// runDemo starts the all-in-one stack on a free port with a temporary data
// directory, runs driver against it, and stops everything.
func runDemo(env Env, name string, opts demoOptions, driver func(context.Context, *batchq.Client) error) int {
	dataDir, err := os.MkdirTemp("", "batchq-demo-")
	if err != nil {
		return failure(env, name, fmt.Errorf("create a temporary data directory: %w", err))
	}
	defer os.RemoveAll(dataDir)

	level := slog.LevelError
	if opts.verbose {
		level = slog.LevelInfo
	}
	log := newLogger(env.Stderr, level)
	s, err := startStack(env.context(), stackOptions{
		server:  embedded.Config{Dir: dataDir, Port: embedded.RandomPort},
		workers: workerOptions{queues: []string{batchq.DefaultQueue}, concurrency: opts.concurrency, drainTimeout: demoDrainTimeout},
		stores:  kvStoreOptions(),
		log:     log,
	})
	if err != nil {
		return failure(env, name, err)
	}
	defer s.close()
	client := s.client

	var g run.Group
	addStopActors(&g, env)
	for _, p := range s.parts {
		addPart(&g, p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error {
		if err := waitForCoordinator(ctx, client); err != nil {
			return err
		}
		return driver(ctx, client)
	}, func(error) {
		cancel()
	})

	err = g.Run()
	switch {
	case requestedStop(env, err):
		fmt.Fprintf(env.Stderr, "%s: interrupted\n", name)
		return ExitFailure
	case err != nil:
		return failure(env, name, err)
	}
	return ExitOK
}

// waitForCoordinator waits until the coordinator replies to read requests.
func waitForCoordinator(ctx context.Context, client *batchq.Client) error {
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	for {
		_, err := client.Batch(ctx, "ping")
		if !errors.Is(err, batchq.ErrNoCoordinator) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the coordinator did not start: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// goRoot returns the root of the Go installation: the output of "go env
// GOROOT" when a go command is on the PATH, otherwise the root that this
// program was built with.
func goRoot(ctx context.Context) (string, error) {
	if path, err := exec.LookPath("go"); err == nil {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, path, "env", "GOROOT").Output()
		if root := strings.TrimSpace(string(out)); err == nil && root != "" {
			return root, nil
		}
	}
	if root := runtime.GOROOT(); root != "" {
		return root, nil
	}
	return "", errors.New("no Go installation was found")
}

// checkDir returns an error unless dir is an existing directory.
func checkDir(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%w; pass an existing directory", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory; pass a directory", dir)
	}
	return nil
}

// terminal returns w when it is a terminal, otherwise nil.
func terminal(w io.Writer) io.Writer {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return w
}
