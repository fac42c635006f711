package coordinator

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/internal/pgtest"
	"github.com/batchq/batchq/store"
	"github.com/batchq/batchq/store/pgstore"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

// TestWaitDuringStoreOutage calls Wait while the coordinator cannot reach
// Postgres. Wait outlives the outage and returns once the database is back
// and the batch completes.
func TestWaitDuringStoreOutage(t *testing.T) {
	dbURL := pgtest.URL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %s: %v", pgtest.URLVar, err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	proxy := startProxy(t, target)
	u.Host = proxy.addr
	schema := "check_wait_outage"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := pgstore.Open(ctx, pgstore.Config{URL: u.String(), Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		conn, err := pgx.Connect(context.Background(), dbURL)
		if err != nil {
			t.Errorf("connect to drop schema: %v", err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})

	e := newEnv(t, func(testing.TB, *nats.Conn) store.Store { return st })
	e.startCoordinator(nil)
	g := newGate()
	e.startExecutor("default", map[string]executor.Handler{"held": g.handler()}, nil)
	id, err := e.client.NewBatch(batchq.Jobs("held")...).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the batch to run", func() bool {
		b, err := e.client.Batch(e.ctx(), id)
		return err == nil && b.Status == batchq.StatusRunning
	})

	addr := proxy.addr
	proxy.stop()
	type waited struct {
		info *batchq.BatchInfo
		err  error
	}
	done := make(chan waited, 1)
	go func() {
		info, err := e.client.Wait(e.ctx(), id)
		done <- waited{info, err}
	}()
	select {
	case w := <-done:
		t.Fatalf("Wait returned during the outage: %+v, %v", w.info, w.err)
	case <-time.After(2 * time.Second):
	}

	proxy.listen(t, addr)
	g.release(0)
	select {
	case w := <-done:
		if w.err != nil || w.info.Status != batchq.StatusCompleted {
			t.Errorf("Wait after the outage = %+v, %v; want completed", w.info, w.err)
		}
	case <-time.After(25 * time.Second):
		t.Error("Wait did not return after the batch completed")
	}
}
