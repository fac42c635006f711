// Package coordinator turns batchq events into batch and chain state.
//
// The coordinator consumes submissions and job outcomes from the events
// stream in groups, applies each group to the store in one update, and
// publishes what follows (work, callbacks, compensations, lifecycle events)
// from the store's outbox. It also dispatches the work of parallel batches,
// republishes outbox messages that a crash left behind, prunes old batches,
// and serves the read API that clients use.
//
// Several coordinators may share one store and one NATS account: they share
// the durable consumer, and every change goes through guarded store updates,
// so an outcome counts once and a batch settles once.
package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/internal/streams"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	DefaultConsumer       = "coordinator"
	DefaultGroupSize      = 256
	DefaultAckWait        = 30 * time.Second
	DefaultSweepInterval  = 2 * time.Second
	DefaultOutboxAge      = 5 * time.Second
	DefaultDispatchChunk  = 1000
	DefaultPublishWindow  = 4096
	DefaultPruneInterval  = 10 * time.Minute
	DefaultRetryDelay     = time.Second
	DefaultMaxMessageSize = 1 << 20
)

// Config configures a Coordinator.
type Config struct {
	// Conn is the NATS connection. Required.
	Conn *nats.Conn
	// Store keeps the state. Required.
	Store store.Store
	// Logger receives the coordinator's logs. Default slog.Default().
	Logger *slog.Logger
	// Streams sets how the coordinator creates the events and work streams.
	Streams streams.Config

	// Consumer is the durable consumer name that replicas share. Default
	// "coordinator".
	Consumer string
	// GroupSize bounds how many events one store update applies. Default
	// 256.
	GroupSize int
	// AckWait is how long an event may stay unacknowledged before the
	// server redelivers it. Default 30s.
	AckWait time.Duration
	// RetryDelay is how long an event waits before it is tried again after
	// the store failed or something it depends on was not yet stored.
	// Default 1s.
	RetryDelay time.Duration
	// SweepInterval is how often the outbox and undispatched batches are
	// checked for work a crash left behind. Default 2s.
	SweepInterval time.Duration
	// OutboxAge is the age an outbox message reaches before the sweeper
	// republishes it. Younger ones belong to an update still publishing.
	// Default 5s.
	OutboxAge time.Duration
	// DispatchChunk is how many jobs of a parallel batch are published per
	// store read. Default 1000.
	DispatchChunk int
	// PublishWindow bounds the asynchronous publishes in flight. Default
	// 4096.
	PublishWindow int
	// Retention removes batches this long after they finished. Zero keeps
	// them forever.
	Retention time.Duration
	// PruneInterval is how often retention runs. Default 10 minutes.
	PruneInterval time.Duration
	// MaxMessageSize bounds a message the coordinator publishes; a job
	// whose work would be larger fails instead. Default: the server's max
	// payload, at most 1 MiB.
	MaxMessageSize int
	// Metrics, when set, receives the coordinator's Prometheus metrics.
	Metrics prometheus.Registerer

	// afterCommit, when set, runs after each store update commits and
	// before its messages are published. Tests use it to stop a
	// coordinator at that point.
	afterCommit func() error
}

func (c *Config) setDefaults() {
	c.Streams = c.Streams.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Consumer == "" {
		c.Consumer = DefaultConsumer
	}
	if c.GroupSize == 0 {
		c.GroupSize = DefaultGroupSize
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = DefaultRetryDelay
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.OutboxAge == 0 {
		c.OutboxAge = DefaultOutboxAge
	}
	if c.DispatchChunk == 0 {
		c.DispatchChunk = DefaultDispatchChunk
	}
	if c.PublishWindow == 0 {
		c.PublishWindow = DefaultPublishWindow
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = DefaultPruneInterval
	}
	if c.MaxMessageSize == 0 && c.Conn != nil {
		c.MaxMessageSize = int(min(c.Conn.MaxPayload(), DefaultMaxMessageSize))
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
}

func (c *Config) validate() error {
	if c.Conn == nil {
		return errors.New("coordinator: Config.Conn is nil; pass a connected *nats.Conn")
	}
	if c.Store == nil {
		return errors.New("coordinator: Config.Store is nil; pass a kvstore or pgstore Store")
	}
	if c.GroupSize < 1 || c.GroupSize > 900 {
		return fmt.Errorf("coordinator: GroupSize %d is out of range; use 1 to 900", c.GroupSize)
	}
	if c.DispatchChunk < 1 {
		return fmt.Errorf("coordinator: DispatchChunk %d is below 1", c.DispatchChunk)
	}
	return nil
}

// Coordinator applies events to batch state. Create one with New and run it
// with Run.
type Coordinator struct {
	cfg   Config
	js    jetstream.JetStream
	store store.Store
	log   *slog.Logger
	enc   events.Encoder

	metrics *metrics
	// cons is the shared events consumer, set by Run.
	cons jetstream.Consumer

	dispatchMu     sync.Mutex
	dispatching    map[string]bool
	dispatchSignal chan string
}

// New validates cfg and returns a coordinator.
func New(cfg Config) (*Coordinator, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	js, err := jetstream.New(cfg.Conn, jetstream.WithPublishAsyncMaxPending(cfg.PublishWindow))
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("coordinator: register metrics: %w", err)
	}
	return &Coordinator{
		metrics:        m,
		cfg:            cfg,
		js:             js,
		store:          cfg.Store,
		log:            cfg.Logger,
		enc:            events.Encoder{Source: "batchq/coordinator"},
		dispatching:    make(map[string]bool),
		dispatchSignal: make(chan string, 1024),
	}, nil
}

// Run sets up the streams and the consumer, then consumes events, serves
// the read API and sweeps until ctx is cancelled. It returns nil after a
// clean stop.
func (c *Coordinator) Run(ctx context.Context) error {
	if err := streams.Apply(ctx, c.js, c.cfg.Streams); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if err := c.ensureCancelledBucket(ctx); err != nil {
		return err
	}
	cons, err := c.consumer(ctx)
	if err != nil {
		return err
	}
	c.cons = cons
	api, err := c.startAPI()
	if err != nil {
		return err
	}
	defer func() {
		if err := api.Stop(); err != nil {
			c.log.Warn("stop read API", "error", err)
		}
	}()

	c.log.Info("coordinator started", "consumer", c.cfg.Consumer, "group_size", c.cfg.GroupSize)
	defer c.log.Info("coordinator stopped")

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, loop := range []func(context.Context) error{
		func(ctx context.Context) error { return c.consume(ctx, cons) },
		c.sweepLoop,
		c.dispatchLoop,
		c.pruneLoop,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := loop(ctx); err != nil && ctx.Err() == nil {
				errs <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (c *Coordinator) consumer(ctx context.Context) (jetstream.Consumer, error) {
	filters := make([]string, 0, len(events.CoordinatorInputs))
	for _, t := range events.CoordinatorInputs {
		filters = append(filters, events.EventFilter(t))
	}
	cons, err := c.js.CreateOrUpdateConsumer(ctx, events.EventsStream, jetstream.ConsumerConfig{
		Durable:        c.cfg.Consumer,
		Description:    "batchq coordinator",
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        c.cfg.AckWait,
		MaxAckPending:  max(4*c.cfg.GroupSize, 10000),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("coordinator: create consumer %s: %w", c.cfg.Consumer, err)
	}
	return cons, nil
}

func (c *Coordinator) ensureCancelledBucket(ctx context.Context) error {
	_, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      events.CancelledBucket,
		Description: "batchq cancelled batches, watched by executors",
		History:     1,
		TTL:         c.cfg.Streams.EventsMaxAge,
		Replicas:    c.cfg.Streams.Replicas,
		Storage:     c.cfg.Streams.Storage,
	})
	if err != nil {
		return fmt.Errorf("coordinator: create bucket %s: %w", events.CancelledBucket, err)
	}
	return nil
}
