// Package kvstore implements store.Store on a JetStream key-value bucket, the
// embedded default of batchq.
//
// Every Store.Update commits as one atomic batch publish to the bucket's
// stream, and every key it writes carries the revision it was read at
// (Nats-Expected-Last-Subject-Sequence). So a change to a batch, its jobs and
// its outbox lands all at once or not at all, and a writer that read stale
// state gets store.ErrConflict and retries. This needs nats-server 2.12 or
// later, which added atomic batch publishing.
//
// Keys, with <b> a batch id:
//
//	b.<b>                   batch record
//	c.<b>.<first>.<count>   job specs for positions first .. first+count-1
//	j.<b>.<job id>          job or callback state, written on its first change
//	a.<b>.<add id>          an applied jobs.added event
//	o.<b>.<seq>             outbox message
//	u.<b>                   marks a parallel batch with unpublished work
//	f.<b>                   marks a final batch, for pruning
//	r.<time>                a rejected event
package kvstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Config.
const (
	DefaultBucket       = "batchq"
	DefaultChunkCache   = 256
	DefaultMaxRejected  = 1000
	DefaultRecordChunks = 1000
	defaultUpdateRetry  = 50
	maxAtomicBatchSize  = 1000
	maxDirectGetSubject = 1000
)

// Config configures a Store.
type Config struct {
	// Bucket is the key-value bucket name. Default "batchq".
	Bucket string
	// Replicas is the bucket's replica count. Default 1.
	Replicas int
	// Storage is file or memory storage. Default file.
	Storage jetstream.StorageType
	// ChunkCache bounds how many job-spec chunks are kept in memory. Chunks
	// never change, so the cache is never stale. Default 256.
	ChunkCache int
	// MaxRejected bounds how many rejected events are kept. Default 1000.
	MaxRejected int
	// RecordChunks bounds the chunk references kept in a batch record
	// before they move to an index key, so the record stays small however
	// many additions a batch gets. Default 1000, about 26 kB.
	RecordChunks int
	// Logger receives retries and errors that the store handles itself.
	// Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.ChunkCache == 0 {
		c.ChunkCache = DefaultChunkCache
	}
	if c.MaxRejected == 0 {
		c.MaxRejected = DefaultMaxRejected
	}
	if c.RecordChunks == 0 {
		c.RecordChunks = DefaultRecordChunks
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Store is a store.Store on a JetStream key-value bucket.
type Store struct {
	cfg    Config
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	stream string
	prefix string // "$KV.<bucket>."
	log    *slog.Logger

	chunks *chunkCache

	indexMu sync.Mutex
	index   map[string][]chunkRef

	rejectedMu sync.Mutex
}

// New opens the bucket, creating it when missing, and enables atomic batch
// publishing on its stream.
func New(ctx context.Context, nc *nats.Conn, cfg Config) (*Store, error) {
	cfg.setDefaults()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("kvstore: %w", err)
	}
	// An existing bucket is opened as it is: updating it from a plain
	// key-value config would try to turn off message TTLs, which the
	// server refuses.
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      cfg.Bucket,
			Description: "batchq batch and job state",
			History:     1,
			Replicas:    cfg.Replicas,
			Storage:     cfg.Storage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kvstore: open bucket %q: %w", cfg.Bucket, err)
	}
	streamName := "KV_" + cfg.Bucket
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		return nil, fmt.Errorf("kvstore: open stream %s: %w", streamName, err)
	}
	conf := stream.CachedInfo().Config
	if !conf.AllowAtomicPublish || !conf.AllowMsgTTL {
		conf.AllowAtomicPublish = true
		conf.AllowMsgTTL = true
		if _, err := js.UpdateStream(ctx, conf); err != nil {
			return nil, fmt.Errorf("kvstore: enable atomic publish and message TTLs on stream %s (needs nats-server 2.12 or later): %w", streamName, err)
		}
	}
	return &Store{
		cfg:    cfg,
		js:     js,
		kv:     kv,
		stream: streamName,
		prefix: "$KV." + cfg.Bucket + ".",
		log:    cfg.Logger,
		chunks: newChunkCache(cfg.ChunkCache),
		index:  make(map[string][]chunkRef),
	}, nil
}

// Close releases nothing: the NATS connection belongs to the caller.
func (s *Store) Close() error {
	return nil
}

// tombstoneTTL is how long a delete marker of an outbox or dispatch marker
// key stays in the stream. Those keys are never written again, so their
// markers only cost the listings that skip them; they expire instead of
// piling up until the batch is pruned.
const tombstoneTTL = "60s"

// newTombstone returns a delete marker for key that expires after
// tombstoneTTL.
func (s *Store) newTombstone(key string) *nats.Msg {
	m := nats.NewMsg(s.prefix + key)
	m.Header.Set("KV-Operation", "DEL")
	m.Header.Set(jetstream.MsgTTLHeader, tombstoneTTL)
	return m
}

// isConflict reports whether err is a failed revision check.
func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}

func backoff(attempt int) time.Duration {
	d := time.Duration(attempt) * time.Millisecond
	if d > 50*time.Millisecond {
		d = 50 * time.Millisecond
	}
	return d
}
