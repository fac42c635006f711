// Package executor runs the jobs of one batchq queue.
//
// Register a handler per job name with Handle, then Run. The executor pulls
// no more work messages than it can run at once. It reports each outcome to
// the coordinator before it acknowledges the message. Failed attempts are
// retried with exponential backoff through the work stream, so retries
// survive a restart. An attempt's timeout cancels its handler's context,
// and a handler must return when its context ends: the executor waits for
// it. A panic in a handler fails the attempt like an error does.
package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/internal/streams"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Handler runs one attempt of a job. A nil error completes the job; any
// other error fails the attempt, and the job is retried until it runs out of
// attempts. Wrap an error with Permanent to fail the job at once.
type Handler func(ctx context.Context, job *Job) error

// Work selects what an executor runs.
type Work int

const (
	// Jobs runs jobs, chain steps and callbacks.
	Jobs Work = iota
	// Compensations runs compensation jobs. The compensator package sets
	// this; use that package rather than setting it here.
	Compensations
)

// Defaults of Config.
const (
	DefaultQueue              = "default"
	DefaultAckWait            = 30 * time.Second
	DefaultMaxAttempts        = 3
	DefaultUnknownJobAttempts = 3
	DefaultMinBackoff         = time.Second
	DefaultMaxBackoff         = 5 * time.Minute
	DefaultTimeout            = 30 * time.Minute
	DefaultMaxDeliver         = 10
	DefaultDrainTimeout       = 30 * time.Second
	DefaultMaxContextBytes    = 256 << 10
)

// Config configures an Executor.
type Config struct {
	// Conn is the NATS connection. Required.
	Conn *nats.Conn
	// Queue is the queue whose work this executor runs. Default "default".
	Queue string
	// Work selects jobs (default) or compensations.
	Work Work
	// Concurrency is how many jobs run at once; the executor also fetches
	// no more messages than that. Default the number of CPUs.
	Concurrency int
	// AckWait is how long the server waits for an acknowledgement before it
	// redelivers a message; running jobs send progress every third of it.
	// Default 30s.
	AckWait time.Duration
	// MaxAttempts is how often a job runs before it fails for good, when
	// neither the job nor its batch sets it. Default 3.
	MaxAttempts int
	// UnknownJobAttempts bounds the attempts of a job whose name has no
	// handler here, so that a deploy that adds the handler can still run it.
	// Default 3.
	UnknownJobAttempts int
	// MinBackoff and MaxBackoff bound the delay before a retry, which
	// doubles with each attempt. Defaults 1s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds an attempt when neither the job nor its batch sets a
	// timeout. Default 30 minutes.
	Timeout time.Duration
	// MaxDeliver bounds how often one work message is delivered. The
	// server delivers a message no more often than that, so its last
	// delivery fails the job instead of running it: a job whose executors
	// keep crashing runs at most MaxDeliver-1 times. The delivery that
	// waits out a retry delay does not count. Default 10.
	MaxDeliver int
	// DrainTimeout is how long Run waits for running jobs after ctx ends.
	// Jobs still running then are cancelled and left for redelivery; Run
	// returns at most 5s later even when a handler ignores its context,
	// and drops what such a handler returns. Default 30s.
	DrainTimeout time.Duration
	// MaxContextBytes bounds the context a chain step leaves; a larger one
	// fails the step. Default 256 KiB.
	MaxContextBytes int
	// Logger receives the executor's logs. Default slog.Default().
	Logger *slog.Logger
	// Streams sets how the streams are created when they are missing.
	Streams streams.Config
	// Metrics, when set, receives the executor's Prometheus metrics. The
	// executors of one process may share a registry.
	Metrics prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Queue == "" {
		c.Queue = DefaultQueue
	}
	if c.Concurrency == 0 {
		c.Concurrency = runtime.NumCPU()
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.UnknownJobAttempts == 0 {
		c.UnknownJobAttempts = DefaultUnknownJobAttempts
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.MaxContextBytes == 0 {
		c.MaxContextBytes = DefaultMaxContextBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	if c.Conn == nil {
		return errors.New("executor: Config.Conn is nil; pass a connected *nats.Conn")
	}
	if err := events.ValidateQueueName(c.Queue); err != nil {
		return fmt.Errorf("executor: Config.Queue: %w", err)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("executor: Concurrency %d is below 1", c.Concurrency)
	}
	if c.AckWait < time.Second {
		return fmt.Errorf("executor: AckWait %s is below 1s", c.AckWait)
	}
	if c.MaxAttempts < 1 || c.UnknownJobAttempts < 1 {
		return errors.New("executor: MaxAttempts and UnknownJobAttempts must be at least 1")
	}
	if c.MinBackoff > c.MaxBackoff {
		return fmt.Errorf("executor: MinBackoff %s is above MaxBackoff %s", c.MinBackoff, c.MaxBackoff)
	}
	if c.MaxDeliver < 2 {
		return fmt.Errorf("executor: MaxDeliver %d is below 2; the last delivery reports the failure, so 2 allows one run", c.MaxDeliver)
	}
	return nil
}

// Executor runs the jobs of one queue.
type Executor struct {
	cfg    Config
	js     jetstream.JetStream
	client *batchq.Client
	log    *slog.Logger
	enc    events.Encoder

	mu       sync.RWMutex
	handlers map[string]Handler
	running  bool

	cancelled *cancelledSet
	metrics   *metrics

	inflightMu sync.Mutex
	inflight   map[*inflight]struct{}
}

// New validates cfg and returns an executor without handlers.
func New(cfg Config) (*Executor, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(cfg.Conn)
	if err != nil {
		return nil, fmt.Errorf("executor: %w", err)
	}
	client, err := batchq.NewClient(cfg.Conn, batchq.Config{Streams: cfg.Streams})
	if err != nil {
		return nil, fmt.Errorf("executor: %w", err)
	}
	m, err := newMetrics(cfg.Metrics, cfg.Queue, cfg.Work)
	if err != nil {
		return nil, fmt.Errorf("executor: register metrics: %w", err)
	}
	source := "batchq/executor"
	if cfg.Work == Compensations {
		source = "batchq/compensator"
	}
	return &Executor{
		cfg:       cfg,
		js:        js,
		client:    client,
		log:       cfg.Logger,
		enc:       events.Encoder{Source: source},
		handlers:  make(map[string]Handler),
		cancelled: newCancelledSet(cfg.Streams.WithDefaults().EventsMaxAge),
		metrics:   m,
		inflight:  make(map[*inflight]struct{}),
	}, nil
}

// Handle registers the handler of a job name. It panics when the name is
// invalid, already registered, or when Run has started, because each of
// those is a programming error found at start-up.
func (e *Executor) Handle(name string, h Handler) {
	if err := events.ValidateJobName(name); err != nil {
		panic("executor: Handle: " + err.Error())
	}
	if h == nil {
		panic("executor: Handle: nil handler for " + name)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.running {
		panic("executor: Handle(" + name + ") after Run started")
	}
	if _, dup := e.handlers[name]; dup {
		panic("executor: Handle: a handler for " + name + " is already registered")
	}
	e.handlers[name] = h
}

func (e *Executor) handler(name string) (Handler, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	h, ok := e.handlers[name]
	return h, ok
}

// Client returns the client that handlers reach through Job.Client.
func (e *Executor) Client() *batchq.Client { return e.client }
