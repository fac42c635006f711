package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/internal/embedded"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

// stackOptions configure the all-in-one process of the dev command and the
// demos.
type stackOptions struct {
	server    embedded.Config
	workers   workerOptions
	stores    storeOptions
	retention time.Duration
	log       *slog.Logger
}

// stack is an embedded NATS server with a store and the parts that run on
// them: the coordinator, and an executor and a compensator per queue.
type stack struct {
	server *embedded.Server
	store  store.Store
	parts  []part
	// client reads from the coordinator; the demos also dispatch with it.
	client *batchq.Client
}

// startStack starts the embedded server, opens the store and builds the
// parts without running them.
func startStack(ctx context.Context, o stackOptions) (*stack, error) {
	srv, err := embedded.Start(o.server)
	if err != nil {
		return nil, err
	}
	s := &stack{server: srv}
	if err := s.build(ctx, o); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *stack) build(ctx context.Context, o stackOptions) error {
	nc, err := s.connect("batchq-store")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	if s.store, err = openStore(ctx, nc, o.stores, o.log.With("service", "store")); err != nil {
		return err
	}
	coordinator, err := newCoordinatorPart(s.connect, s.store, o.retention, o.workers.metrics, o.log)
	if err != nil {
		return err
	}
	executors, err := newExecutorParts(s.connect, o.workers, o.log)
	if err != nil {
		return err
	}
	compensators, err := newCompensatorParts(s.connect, o.workers, o.log)
	if err != nil {
		return err
	}
	clientConn, err := s.connect("batchq-client")
	if err != nil {
		return err
	}
	if s.client, err = batchq.NewClient(clientConn, batchq.Config{}); err != nil {
		return err
	}

	// The coordinator updates the streams when it starts, and the workers
	// create their consumers on those streams when they start. The workers
	// wait for the coordinator, because nats-server v2.15.3 has a data race
	// between a stream update and a consumer creation on the same stream.
	workers := append(executors, compensators...)
	for i := range workers {
		workers[i].wait = func(ctx context.Context) error { return waitForCoordinator(ctx, s.client) }
	}
	s.parts = append([]part{coordinator}, workers...)
	return nil
}

// connect opens an in-process connection to the embedded server.
func (s *stack) connect(name string) (*nats.Conn, error) {
	return s.server.Connect(name)
}

// close closes the store, then the connections and the server. Call it
// after the parts have stopped.
func (s *stack) close() error {
	var err error
	if s.store != nil {
		err = s.store.Close()
	}
	s.server.Shutdown()
	return err
}
