package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// addMetricsFlag registers --metrics-addr.
func addMetricsFlag(fs *flag.FlagSet, addr *string) {
	fs.StringVar(addr, "metrics-addr", "", "host:port to serve Prometheus metrics on at /metrics, for example 127.0.0.1:9464; empty serves none")
}

// metricsServer serves a registry's metrics over HTTP.
type metricsServer struct {
	registry *prometheus.Registry
	listener net.Listener
}

// newMetricsServer listens on addr, or returns nil when addr is empty.
func newMetricsServer(addr string) (*metricsServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on --metrics-addr %s: %w", addr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &metricsServer{registry: reg, listener: ln}, nil
}

// registerer returns the registry, or nil when no server runs, so that the
// services record no metrics.
func (m *metricsServer) registerer() prometheus.Registerer {
	if m == nil {
		return nil
	}
	return m.registry
}

// part returns the server as a part of the process.
func (m *metricsServer) part() part {
	return part{name: "metrics server", run: func(ctx context.Context) error {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(m.listener) }()
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(shutdownCtx); err != nil {
				return err
			}
			if err := <-done; !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}
	}}
}

// close releases the listener of a server that never ran.
func (m *metricsServer) close() {
	if m != nil {
		_ = m.listener.Close()
	}
}
