package demo

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/compensator"
	"github.com/batchq/batchq/coordinator"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/internal/natstest"
	"github.com/batchq/batchq/store/kvstore"
	"github.com/nats-io/nats-server/v2/server"
)

func testLogger() *slog.Logger {
	if os.Getenv("BATCHQ_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// testContext returns a context that ends with the test or after a minute.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// startServices starts a nats-server, a coordinator on the KV store, an
// executor with the demo jobs and a compensator with the demo
// compensations, and returns a client. Everything stops when the test ends.
func startServices(t *testing.T) (*batchq.Client, *server.Server) {
	t.Helper()
	srv := natstest.Start(t)
	log := testLogger()
	st, err := kvstore.New(context.Background(), natstest.Connect(t, srv), kvstore.Config{Logger: log})
	if err != nil {
		t.Fatalf("kvstore.New: %v", err)
	}
	coord, err := coordinator.New(coordinator.Config{
		Conn:          natstest.Connect(t, srv),
		Store:         st,
		Logger:        log,
		SweepInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("coordinator.New: %v", err)
	}
	exec, err := executor.New(executor.Config{Conn: natstest.Connect(t, srv), Concurrency: 8, Logger: log})
	if err != nil {
		t.Fatalf("executor.New: %v", err)
	}
	RegisterJobs(exec)
	comp, err := compensator.New(compensator.Config{Conn: natstest.Connect(t, srv), Concurrency: 2, Logger: log})
	if err != nil {
		t.Fatalf("compensator.New: %v", err)
	}
	RegisterCompensations(comp)

	client, err := batchq.NewClient(natstest.Connect(t, srv), batchq.Config{})
	if err != nil {
		t.Fatalf("batchq.NewClient: %v", err)
	}

	// The coordinator updates the streams at start. It runs first because
	// nats-server v2.15.3 races (under -race) when a stream update and a
	// consumer creation on that stream run at the same time.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	started := 0
	start := func(run func(context.Context) error) {
		started++
		go func() { done <- run(ctx) }()
	}
	t.Cleanup(func() {
		cancel()
		for range started {
			if err := <-done; err != nil {
				t.Errorf("service stopped with error: %v", err)
			}
		}
	})
	start(coord.Run)
	waitForCoordinator(t, client)
	start(exec.Run)
	start(comp.Run)
	return client, srv
}

// waitForCoordinator waits until the coordinator replies to read requests.
func waitForCoordinator(t *testing.T, client *batchq.Client) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := client.Batch(context.Background(), "ping")
		if !errors.Is(err, batchq.ErrNoCoordinator) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the coordinator did not answer within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
