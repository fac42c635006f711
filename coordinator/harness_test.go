package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/compensator"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/internal/natstest"
	"github.com/batchq/batchq/store"
	"github.com/batchq/batchq/store/kvstore"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// storeOpener opens an empty store for one test on a NATS connection.
type storeOpener struct {
	name string
	open func(t testing.TB, nc *nats.Conn) store.Store
}

var bucketSeq atomic.Int64

// stores lists the stores that every coordinator test runs on.
func stores() []storeOpener {
	list := []storeOpener{{
		name: "kv",
		open: func(t testing.TB, nc *nats.Conn) store.Store {
			s, err := kvstore.New(context.Background(), nc, kvstore.Config{Bucket: fmt.Sprintf("state%d", bucketSeq.Add(1))})
			if err != nil {
				t.Fatalf("kvstore.New: %v", err)
			}
			return s
		},
	}}
	return append(list, extraStores...)
}

// extraStores holds stores that need a server outside the test, added by
// other test files when their server is configured.
var extraStores []storeOpener

// forEachStore runs fn once per store as a subtest.
func forEachStore(t *testing.T, fn func(t *testing.T, open func(testing.TB, *nats.Conn) store.Store)) {
	for _, s := range stores() {
		t.Run(s.name, func(t *testing.T) {
			fn(t, s.open)
		})
	}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("BATCHQ_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// env is one NATS server, one store, and the parts a test starts on them.
type env struct {
	t      testing.TB
	srv    *server.Server
	nc     *nats.Conn
	store  store.Store
	client *batchq.Client
	log    *slog.Logger
}

func newEnv(t testing.TB, open func(testing.TB, *nats.Conn) store.Store) *env {
	t.Helper()
	return newEnvOn(t, natstest.Start(t), open)
}

// newEnvOn is newEnv on a server the test started.
func newEnvOn(t testing.TB, srv *server.Server, open func(testing.TB, *nats.Conn) store.Store) *env {
	t.Helper()
	nc := natstest.Connect(t, srv)
	client, err := batchq.NewClient(nc, batchq.Config{Queues: map[string]string{"reports": "slow"}})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, nc: nc, store: open(t, nc), client: client, log: testLogger(t)}
}

// runner runs one part until it is stopped or the test ends.
type runner struct {
	cancel context.CancelFunc
	// done is closed when the part returned; err holds what it returned.
	done chan struct{}
	err  error
}

func (r *runner) stop() error {
	r.cancel()
	<-r.done
	return r.err
}

func (e *env) run(t testing.TB, fn func(context.Context) error) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	r := &runner{cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = fn(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Logf("part stopped with error: %v", err)
		}
	})
	return r
}

// startCoordinator starts a coordinator; change adjusts its config.
func (e *env) startCoordinator(change func(*Config)) *runner {
	e.t.Helper()
	cfg := Config{
		Conn:          natstest.Connect(e.t, e.srv),
		Store:         e.store,
		Logger:        e.log.With("part", "coordinator"),
		AckWait:       2 * time.Second,
		RetryDelay:    50 * time.Millisecond,
		SweepInterval: 200 * time.Millisecond,
		OutboxAge:     500 * time.Millisecond,
	}
	if change != nil {
		change(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	r := e.run(e.t, c.Run)
	eventually(e.t, "the coordinator's read API", func() bool {
		_, err := e.client.Batch(context.Background(), "ping")
		return !errors.Is(err, batchq.ErrNoCoordinator)
	})
	return r
}

// startExecutor starts an executor of queue with handlers.
func (e *env) startExecutor(queue string, handlers map[string]executor.Handler, change func(*executor.Config)) *runner {
	e.t.Helper()
	cfg := executor.Config{
		Conn:         natstest.Connect(e.t, e.srv),
		Queue:        queue,
		Concurrency:  4,
		AckWait:      2 * time.Second,
		MinBackoff:   20 * time.Millisecond,
		MaxBackoff:   100 * time.Millisecond,
		DrainTimeout: 2 * time.Second,
		Logger:       e.log.With("part", "executor", "queue", queue),
	}
	if change != nil {
		change(&cfg)
	}
	x, err := executor.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	for name, h := range handlers {
		x.Handle(name, h)
	}
	return e.run(e.t, x.Run)
}

// startCompensator starts a compensator of queue with handlers.
func (e *env) startCompensator(queue string, handlers map[string]executor.Handler) *runner {
	return e.startCompensatorWith(func(c *executor.Config) { c.Queue = queue }, handlers)
}

// startCompensatorWith starts a compensator whose config change adjusts.
func (e *env) startCompensatorWith(change func(*executor.Config), handlers map[string]executor.Handler) *runner {
	e.t.Helper()
	cfg := compensator.Config{
		Conn:        natstest.Connect(e.t, e.srv),
		Queue:       "default",
		Concurrency: 2,
		AckWait:     2 * time.Second,
		MinBackoff:  20 * time.Millisecond,
		MaxBackoff:  100 * time.Millisecond,
		Logger:      e.log.With("part", "compensator"),
	}
	change(&cfg)
	c, err := compensator.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	for name, h := range handlers {
		c.Handle(name, h)
	}
	return e.run(e.t, c.Run)
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	e.t.Cleanup(cancel)
	return ctx
}

// wait waits for a batch to be final.
func (e *env) wait(id string) *batchq.BatchInfo {
	e.t.Helper()
	info, err := e.client.Wait(e.ctx(), id)
	if err != nil {
		e.t.Fatalf("Wait(%s): %v", id, err)
	}
	return info
}

// eventually polls cond until it holds or 20s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
