// Package natstest starts in-process NATS servers with JetStream for tests.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options change the server that Start runs.
type Options struct {
	// StoreDir keeps JetStream data; default a new temporary directory.
	StoreDir string
	// Port is the client port; default a random free port.
	Port int
}

// Start runs a JetStream-enabled nats-server on a random loopback port with
// a temporary store, and shuts it down when the test ends.
func Start(tb testing.TB) *server.Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is Start with options, for tests that restart a server on the
// same store and port.
func StartWith(tb testing.TB, o Options) *server.Server {
	tb.Helper()
	if o.StoreDir == "" {
		o.StoreDir = tb.TempDir()
	}
	port := o.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  o.StoreDir,
		NoLog:     true,
		NoSigs:    true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		tb.Fatalf("create nats-server: %v", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		tb.Fatalf("nats-server on %s did not start within 10s", opts.Host)
	}
	tb.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// Connect opens a client connection to srv that closes when the test ends.
func Connect(tb testing.TB, srv *server.Server) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatalf("connect to %s: %v", srv.ClientURL(), err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
