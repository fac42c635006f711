package coordinator

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/internal/natstest"
	"github.com/batchq/batchq/internal/pgtest"
	"github.com/batchq/batchq/store"
	"github.com/batchq/batchq/store/pgstore"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
)

// tcpProxy forwards connections from a loopback port to a target address,
// and can drop every connection and stop listening, as a database outage
// would look to its clients.
type tcpProxy struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{target: target}
	p.listen(t, "127.0.0.1:0")
	t.Cleanup(p.stop)
	return p
}

func (p *tcpProxy) listen(t *testing.T, addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("proxy listen on %s: %v", addr, err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); _, _ = io.Copy(up, c); up.Close() }()
			go func() { defer p.wg.Done(); _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

// stop closes the listener and every forwarded connection.
func (p *tcpProxy) stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

// TestPostgresOutage cuts the coordinator off from Postgres while a batch
// runs. The coordinator keeps running and retrying, and once the database
// is back the batch completes with its callback run once.
func TestPostgresOutage(t *testing.T) {
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
	schema := "outage_test"
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
	coordinator := e.startCoordinator(nil)
	g := newGate()
	rec := &recorder{}
	e.startExecutor("default", map[string]executor.Handler{"held": g.handler(), "done": rec.record(nil)}, nil)
	id, err := e.client.NewBatch(batchq.Jobs("held", "held")...).OnComplete("done", nil).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the batch to run", func() bool {
		b, err := e.client.Batch(e.ctx(), id)
		return err == nil && b.Status == batchq.StatusRunning
	})

	addr := proxy.addr
	proxy.stop()
	g.release(0)
	g.release(1)
	time.Sleep(2 * time.Second) // outcomes arrive and fail to apply
	select {
	case <-coordinator.done:
		t.Fatalf("the coordinator stopped during the outage: %v", coordinator.err)
	default:
	}

	proxy.listen(t, addr)
	info := e.wait(id)
	if info.Status != batchq.StatusCompleted || info.Completed != 2 {
		t.Errorf("batch after the outage = %+v", info)
	}
	eventually(t, "the callback", func() bool { return len(rec.named("done")) == 1 })
	time.Sleep(settleTime)
	if n := len(rec.named("done")); n != 1 {
		t.Errorf("callback ran %d times, want 1", n)
	}
}

// TestNATSRestart restarts the NATS server, with its store, while a batch
// runs. Every part reconnects, and the batch completes with its callback
// run once. A job may run twice, because delivery is at least once.
func TestNATSRestart(t *testing.T) {
	dir := t.TempDir()
	first := natstest.StartWith(t, natstest.Options{StoreDir: dir})
	port := first.Addr().(*net.TCPAddr).Port
	e := newEnvOn(t, first, stores()[0].open)
	e.startCoordinator(nil)
	g := newGate()
	rec := &recorder{}
	e.startExecutor("default", map[string]executor.Handler{
		"held": g.handler(),
		"done": rec.record(nil),
	}, func(c *executor.Config) { c.Concurrency = 8 })
	id, err := e.client.NewBatch(batchq.Jobs("held", "held", "held", "held")...).OnComplete("done", nil).Dispatch(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	g.release(0)
	eventually(t, "job 0 to complete", func() bool {
		b, err := e.client.Batch(e.ctx(), id)
		return err == nil && b.Completed == 1
	})

	first.Shutdown()
	first.WaitForShutdown()
	g.release(1)
	second := natstest.StartWith(t, natstest.Options{StoreDir: dir, Port: port})
	e.srv = second
	g.release(2)
	g.release(3)

	info := e.wait(id)
	if info.Status != batchq.StatusCompleted || info.Completed != 4 {
		t.Fatalf("batch after the restart = %+v", info)
	}
	eventually(t, "the callback", func() bool { return len(rec.named("done")) == 1 })
	time.Sleep(settleTime)
	if n := len(rec.named("done")); n != 1 {
		t.Errorf("callback ran %d times, want 1", n)
	}
}
