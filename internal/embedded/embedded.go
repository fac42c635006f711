// Package embedded runs a nats-server with JetStream inside the current
// process, for `batchq dev` and the demos.
//
// The server listens on a loopback address so that other processes (an
// extra executor, `batchq status`) can connect, and the parts of this
// process connect to it in-process, without a socket.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Defaults of Config.
const (
	// DefaultHost keeps the server off the network.
	DefaultHost = "127.0.0.1"
	// DefaultPort is the standard NATS client port. It clashes with a NATS
	// server that already runs on this machine, so pass another port or
	// RandomPort there.
	DefaultPort = 4222
	// RandomPort requests a free port from the operating system.
	RandomPort = -1
	// DefaultStartTimeout bounds the wait for the server to accept
	// connections.
	DefaultStartTimeout = 10 * time.Second
)

// Config configures the embedded server.
type Config struct {
	// Dir is the directory where JetStream keeps its files. Required. The
	// server creates it when missing.
	Dir string
	// Host is the address the server listens on. Default 127.0.0.1.
	Host string
	// Port is the client port: 0 means DefaultPort (4222), RandomPort a
	// free port chosen by the operating system.
	Port int
	// Sync sets when JetStream flushes its files to disk. The zero value
	// keeps the nats-server default, an fsync every 2 minutes.
	Sync SyncPolicy
	// Verbose writes the server's own log to stderr. Default off.
	Verbose bool
	// StartTimeout bounds the wait for the server to accept connections.
	// Default 10s.
	StartTimeout time.Duration
}

// SyncPolicy sets when JetStream calls fsync on its files. Between two
// syncs, a crash of the machine (not of the process) can lose writes that
// clients already saw acknowledged.
type SyncPolicy struct {
	// Always syncs after every write: the safest and slowest setting.
	Always bool
	// Interval is the time between syncs when Always is false. Zero keeps
	// the nats-server default of 2 minutes.
	Interval time.Duration
}

// ParseSyncPolicy parses "always" or a Go duration such as "2m" or "10s".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	if strings.EqualFold(s, "always") {
		return SyncPolicy{Always: true}, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return SyncPolicy{}, fmt.Errorf("invalid sync policy %q: use \"always\" or a duration such as \"2m\" or \"30s\"", s)
	}
	if d <= 0 {
		return SyncPolicy{}, fmt.Errorf("invalid sync policy %q: the interval must be positive; use \"always\" to sync after every write", s)
	}
	return SyncPolicy{Interval: d}, nil
}

// String returns the policy in the form that ParseSyncPolicy reads.
func (p SyncPolicy) String() string {
	switch {
	case p.Always:
		return "always"
	case p.Interval == 0:
		return "2m0s"
	default:
		return p.Interval.String()
	}
}

// Set parses s into p, so that a SyncPolicy can be a command-line flag.
func (p *SyncPolicy) Set(s string) error {
	parsed, err := ParseSyncPolicy(s)
	if err != nil {
		return err
	}
	*p = parsed
	return nil
}

// ErrPortInUse reports that another process listens on the server's port.
var ErrPortInUse = errors.New("port in use")

// ErrDirInUse reports that another server uses the data directory.
var ErrDirInUse = errors.New("data directory in use")

// Server is a running embedded nats-server.
type Server struct {
	srv  *server.Server
	lock *os.File

	mu    sync.Mutex
	conns []*nats.Conn
}

// Start starts a server with JetStream and waits until it accepts
// connections.
func Start(cfg Config) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("embedded: Config.Dir is empty; give a directory for the JetStream files")
	}
	if cfg.Host == "" {
		cfg.Host = DefaultHost
	}
	if cfg.Port < RandomPort || cfg.Port > 65535 {
		return nil, fmt.Errorf("embedded: invalid port %d: use 1 to 65535, or %d for a free port", cfg.Port, RandomPort)
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = DefaultStartTimeout
	}
	opts := &server.Options{
		ServerName: "batchq-embedded",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.Dir,
		SyncAlways: cfg.Sync.Always,
		NoLog:      !cfg.Verbose,
		NoSigs:     true,
	}
	if cfg.Port == 0 {
		opts.Port = DefaultPort
	}
	if cfg.Sync.Interval > 0 {
		opts.SyncInterval = cfg.Sync.Interval
	}

	if err := checkPortFree(opts); err != nil {
		return nil, err
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		unlockDir(lock)
		return nil, fmt.Errorf("embedded: configure nats-server: %w", err)
	}
	if cfg.Verbose {
		srv.ConfigureLogger()
	}
	go srv.Start()
	if !srv.ReadyForConnections(cfg.StartTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		unlockDir(lock)
		return nil, startError(opts, cfg.StartTimeout)
	}
	return &Server{srv: srv, lock: lock}, nil
}

// checkPortFree returns an error when another process listens on the
// server's port. The server itself reports that only in its log, after
// which Start would wait for the whole start timeout.
func checkPortFree(opts *server.Options) error {
	if opts.Port == RandomPort {
		return nil
	}
	addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("embedded: nats-server cannot listen on %s: %w (%v); stop the process that uses the port or choose another port", addr, ErrPortInUse, err)
	}
	return l.Close()
}

// startError explains why the server did not start in time.
func startError(opts *server.Options, timeout time.Duration) error {
	if err := checkPortFree(opts); err != nil {
		return err
	}
	addr := net.JoinHostPort(opts.Host, strconv.Itoa(opts.Port))
	return fmt.Errorf("embedded: nats-server on %s was not ready within %s; run with verbose logging to see the server's log", addr, timeout)
}

// ClientURL returns the URL that other processes connect to, for example
// nats://127.0.0.1:4222.
func (s *Server) ClientURL() string { return s.srv.ClientURL() }

// Connect opens an in-process client connection. Shutdown closes it.
func (s *Server) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.Name(name), nats.InProcessServer(s.srv)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("embedded: connect %s: %w", name, err)
	}
	s.mu.Lock()
	s.conns = append(s.conns, nc)
	s.mu.Unlock()
	return nc, nil
}

// Shutdown flushes and closes the connections that Connect opened, then
// stops the server and waits until it has stopped. Call it after the parts
// that use those connections have stopped.
func (s *Server) Shutdown() {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, nc := range conns {
		if !nc.IsClosed() {
			_ = nc.FlushTimeout(time.Second)
			nc.Close()
		}
	}
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	unlockDir(s.lock)
	s.lock = nil
}
