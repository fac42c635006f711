package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/batchq/batchq/compensator"
	"github.com/batchq/batchq/coordinator"
	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/executor"
	"github.com/batchq/batchq/internal/demo"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
)

// part is one long-running service of a process.
type part struct {
	name string
	run  func(context.Context) error
	// wait, when set, runs before run and delays its start.
	wait func(context.Context) error
}

// connector opens a NATS connection named after the part that uses it.
type connector func(name string) (*nats.Conn, error)

// workerOptions configure the executors and compensators of a process.
type workerOptions struct {
	queues       []string
	concurrency  int
	drainTimeout time.Duration
	// metrics receives the workers' metrics when set.
	metrics prometheus.Registerer
}

// validate returns an error naming the flag that is invalid.
func (o workerOptions) validate() error {
	seen := make(map[string]bool)
	for _, q := range o.queues {
		if err := events.ValidateQueueName(q); err != nil {
			return fmt.Errorf("--queue: %w", err)
		}
		if seen[q] {
			return fmt.Errorf("--queue %q is given twice; give each queue once", q)
		}
		seen[q] = true
	}
	if o.concurrency < 1 {
		return fmt.Errorf("invalid --concurrency %d: run at least 1 job at a time", o.concurrency)
	}
	if o.drainTimeout <= 0 {
		return fmt.Errorf("invalid --drain-timeout %s: give a positive duration such as 30s", o.drainTimeout)
	}
	return nil
}

// newCoordinatorPart returns the coordinator on its own connection.
func newCoordinatorPart(connect connector, st store.Store, retention time.Duration, metrics prometheus.Registerer, log *slog.Logger) (part, error) {
	nc, err := connect("batchq-coordinator")
	if err != nil {
		return part{}, err
	}
	c, err := coordinator.New(coordinator.Config{
		Conn:      nc,
		Store:     st,
		Logger:    log.With("service", "coordinator"),
		Retention: retention,
		Metrics:   metrics,
	})
	if err != nil {
		return part{}, err
	}
	return part{name: "coordinator", run: c.Run}, nil
}

// newExecutorParts returns one executor with the demo jobs per queue, each
// on its own connection.
func newExecutorParts(connect connector, o workerOptions, log *slog.Logger) ([]part, error) {
	var parts []part
	for _, queue := range o.queues {
		nc, err := connect("batchq-executor-" + queue)
		if err != nil {
			return nil, err
		}
		x, err := executor.New(executor.Config{
			Conn:         nc,
			Queue:        queue,
			Concurrency:  o.concurrency,
			DrainTimeout: o.drainTimeout,
			Logger:       log.With("service", "executor"),
			Metrics:      o.metrics,
		})
		if err != nil {
			return nil, err
		}
		demo.RegisterJobs(x)
		parts = append(parts, part{name: "executor of queue " + queue, run: x.Run})
	}
	return parts, nil
}

// newCompensatorParts returns one compensator with the demo compensations
// per queue, each on its own connection.
func newCompensatorParts(connect connector, o workerOptions, log *slog.Logger) ([]part, error) {
	var parts []part
	for _, queue := range o.queues {
		nc, err := connect("batchq-compensator-" + queue)
		if err != nil {
			return nil, err
		}
		c, err := compensator.New(compensator.Config{
			Conn:         nc,
			Queue:        queue,
			Concurrency:  o.concurrency,
			DrainTimeout: o.drainTimeout,
			Logger:       log.With("service", "compensator"),
			Metrics:      o.metrics,
		})
		if err != nil {
			return nil, err
		}
		demo.RegisterCompensations(c)
		parts = append(parts, part{name: "compensator of queue " + queue, run: c.Run})
	}
	return parts, nil
}

// errStopped reports a part that returned although nothing asked it to
// stop.
var errStopped = errors.New("stopped unexpectedly")

// addPart adds p to g as an actor that runs until g interrupts it.
func addPart(g *run.Group, p part) {
	ctx, cancel := context.WithCancel(context.Background())
	g.Add(func() error {
		if p.wait != nil {
			if err := p.wait(ctx); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
		}
		err := p.run(ctx)
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", p.name, err)
		case ctx.Err() == nil:
			return fmt.Errorf("%s: %w", p.name, errStopped)
		}
		return nil
	}, func(error) {
		cancel()
	})
}

// addStopActors adds the actors that stop g: SIGINT or SIGTERM, or the end
// of the command's context.
func addStopActors(g *run.Group, env Env) {
	g.Add(run.SignalHandler(context.Background(), os.Interrupt, syscall.SIGTERM))
	if env.Context != nil && env.Context.Done() != nil {
		g.Add(run.ContextHandler(env.Context))
	}
}

// requestedStop reports whether err, returned by a run.Group, reports a
// requested stop: a signal or the end of the command's context.
func requestedStop(env Env, err error) bool {
	return errors.Is(err, run.ErrSignal) || (errors.Is(err, context.Canceled) && env.context().Err() != nil)
}

// natsDialer opens connections to an external NATS server and logs
// connection changes, because services keep running across reconnects.
type natsDialer struct {
	url   string
	log   *slog.Logger
	conns []*nats.Conn
}

// connect opens a connection named name.
func (d *natsDialer) connect(name string) (*nats.Conn, error) {
	log := d.log
	nc, err := nats.Connect(d.url,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "connection", name, "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "connection", name, "url", nc.ConnectedUrlRedacted())
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w; start a NATS server with JetStream there, or set --nats-url or BATCHQ_NATS_URL", d.url, err)
	}
	d.conns = append(d.conns, nc)
	return nc, nil
}

// close flushes and closes every connection that connect opened.
func (d *natsDialer) close() {
	for _, nc := range d.conns {
		_ = nc.FlushTimeout(time.Second)
		nc.Close()
	}
	d.conns = nil
}
