// Package batchq dispatches and reads batches of jobs that run on NATS
// JetStream.
//
// A parallel batch runs many jobs at once with a shared read-only context,
// the map step of a map-reduce; its completion callback is the reduce step.
// A chain runs its steps one at a time, and each step may change the
// context that the next one sees. The coordinator service stores the state
// and executors run the jobs; a Client needs only a NATS connection.
//
//	client, _ := batchq.NewClient(nc, batchq.Config{})
//	id, err := client.NewBatch(
//		batchq.Job{Name: "resize", Args: map[string]any{"image": "a.png"}},
//		batchq.Job{Name: "resize", Args: map[string]any{"image": "b.png"}},
//	).OnComplete("publish", nil).Dispatch(ctx)
//	info, err := client.Wait(ctx, id)
package batchq

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/internal/streams"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Config.
const (
	DefaultQueue           = "default"
	DefaultMaxSpecBytes    = 64 << 20
	DefaultMaxContextBytes = 256 << 10
	DefaultChunkBytes      = 256 << 10
	DefaultRequestTimeout  = 10 * time.Second
)

// Config configures a Client. The zero value works.
type Config struct {
	// Queues maps queue names, as given to Builder.Queue, to the queues
	// where work goes. Names missing from it map to themselves.
	Queues map[string]string
	// DefaultQueue is used when a batch names no queue. Default "default".
	DefaultQueue string
	// MaxSpecBytes bounds the encoded jobs and context of one batch.
	// Default 64 MiB.
	MaxSpecBytes int
	// MaxContextBytes bounds the encoded context of a batch. Default 256 KiB.
	MaxContextBytes int
	// ChunkBytes bounds the jobs carried by one submission message; larger
	// batches are sent in several. Default 256 KiB, and at most half the
	// server's max payload.
	ChunkBytes int
	// RequestTimeout bounds calls whose context has no deadline. Default 10s.
	RequestTimeout time.Duration
	// Streams sets how the client creates the streams when they are
	// missing. The coordinator's settings win once it runs.
	Streams streams.Config
}

// Client dispatches batches and reads their state.
type Client struct {
	cfg        Config
	nc         *nats.Conn
	js         jetstream.JetStream
	maxMessage int

	streamsMu    sync.Mutex
	streamsReady bool
}

// NewClient returns a client on an open NATS connection. It validates the
// queue mapping and fills in defaults.
func NewClient(nc *nats.Conn, cfg Config) (*Client, error) {
	if nc == nil {
		return nil, fmt.Errorf("batchq: NewClient needs a NATS connection, got nil")
	}
	if cfg.DefaultQueue == "" {
		cfg.DefaultQueue = DefaultQueue
	}
	if err := events.ValidateQueueName(cfg.DefaultQueue); err != nil {
		return nil, fmt.Errorf("batchq: Config.DefaultQueue: %w", err)
	}
	for name, queue := range cfg.Queues {
		if err := events.ValidateQueueName(queue); err != nil {
			return nil, fmt.Errorf("batchq: Config.Queues[%q]: %w", name, err)
		}
	}
	if cfg.MaxSpecBytes < 0 || cfg.MaxContextBytes < 0 || cfg.ChunkBytes < 0 || cfg.RequestTimeout < 0 {
		return nil, fmt.Errorf("batchq: Config limits must not be negative (MaxSpecBytes %d, MaxContextBytes %d, ChunkBytes %d, RequestTimeout %s); use 0 for the defaults",
			cfg.MaxSpecBytes, cfg.MaxContextBytes, cfg.ChunkBytes, cfg.RequestTimeout)
	}
	if cfg.MaxSpecBytes == 0 {
		cfg.MaxSpecBytes = DefaultMaxSpecBytes
	}
	if cfg.MaxContextBytes == 0 {
		cfg.MaxContextBytes = DefaultMaxContextBytes
	}
	maxMessage := int(nc.MaxPayload())
	if maxMessage <= 0 {
		maxMessage = 1 << 20
	}
	if cfg.ChunkBytes == 0 {
		cfg.ChunkBytes = DefaultChunkBytes
	}
	cfg.ChunkBytes = min(cfg.ChunkBytes, maxMessage/2)
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		return nil, fmt.Errorf("batchq: %w", err)
	}
	return &Client{cfg: cfg, nc: nc, js: js, maxMessage: maxMessage}, nil
}

// Conn returns the client's NATS connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// ResolveQueue returns the queue that work of a batch routed to name goes
// to, after the Queues mapping.
func (c *Client) ResolveQueue(name string) string {
	if q, ok := c.cfg.Queues[name]; ok {
		return q
	}
	return name
}

// withTimeout gives ctx the client's RequestTimeout when it has no deadline.
func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.cfg.RequestTimeout)
}

// ensureStreams creates the streams on first use when no coordinator has
// created them yet, so a dispatch before the coordinator's first start is
// stored rather than lost.
func (c *Client) ensureStreams(ctx context.Context) error {
	c.streamsMu.Lock()
	defer c.streamsMu.Unlock()
	if c.streamsReady {
		return nil
	}
	if err := streams.Ensure(ctx, c.js, c.cfg.Streams); err != nil {
		return fmt.Errorf("batchq: %w", err)
	}
	c.streamsReady = true
	return nil
}
