package embedded

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestParseSyncPolicy(t *testing.T) {
	tests := []struct {
		input string
		want  SyncPolicy
	}{
		{"always", SyncPolicy{Always: true}},
		{"ALWAYS", SyncPolicy{Always: true}},
		{"2m", SyncPolicy{Interval: 2 * time.Minute}},
		{"10s", SyncPolicy{Interval: 10 * time.Second}},
	}
	for _, tt := range tests {
		got, err := ParseSyncPolicy(tt.input)
		if err != nil {
			t.Errorf("ParseSyncPolicy(%q): %v", tt.input, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseSyncPolicy(%q) = %+v, want %+v", tt.input, got, tt.want)
		}
		again, err := ParseSyncPolicy(got.String())
		if err != nil || again != got {
			t.Errorf("ParseSyncPolicy(%q.String() = %q) = %+v, %v; want %+v", tt.input, got.String(), again, err, got)
		}
	}
	for _, input := range []string{"", "soon", "0s", "-1s", "never"} {
		_, err := ParseSyncPolicy(input)
		if err == nil {
			t.Errorf("ParseSyncPolicy(%q) returned no error", input)
			continue
		}
		if !strings.Contains(err.Error(), strconv.Quote(input)) || !strings.Contains(err.Error(), "always") {
			t.Errorf("ParseSyncPolicy(%q) error %q should quote the input and name \"always\"", input, err)
		}
	}
}

func TestSyncPolicyDefaultString(t *testing.T) {
	if got := (SyncPolicy{}).String(); got != "2m0s" {
		t.Errorf("zero SyncPolicy String() = %q, want the nats-server default 2m0s", got)
	}
}

func startTest(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Port == 0 {
		cfg.Port = RandomPort
	}
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func TestStartServesJetStream(t *testing.T) {
	s := startTest(t, Config{})
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TEST", Subjects: []string{"test.>"}}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	if _, err := js.Publish(ctx, "test.a", []byte("hello")); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// Another process connects over TCP at the client URL.
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") {
		t.Errorf("ClientURL = %s, want a loopback URL", s.ClientURL())
	}
	remote, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("connect over TCP: %v", err)
	}
	defer remote.Close()
	rjs, err := jetstream.New(remote)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := rjs.Stream(ctx, "TEST")
	if err != nil {
		t.Fatalf("open stream over TCP: %v", err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "test.a")
	if err != nil {
		t.Fatalf("read over TCP: %v", err)
	}
	if string(msg.Data) != "hello" {
		t.Errorf("message = %q, want hello", msg.Data)
	}
}

func TestStartSyncPolicy(t *testing.T) {
	always := startTest(t, Config{Sync: SyncPolicy{Always: true}})
	if cfg := always.srv.JetStreamConfig(); cfg == nil || !cfg.SyncAlways {
		t.Errorf("JetStream config = %+v, want SyncAlways", cfg)
	}
	interval := startTest(t, Config{Sync: SyncPolicy{Interval: 7 * time.Second}})
	if cfg := interval.srv.JetStreamConfig(); cfg == nil || cfg.SyncAlways || cfg.SyncInterval != 7*time.Second {
		t.Errorf("JetStream config = %+v, want a sync interval of 7s", cfg)
	}
}

func TestShutdownClosesConnections(t *testing.T) {
	s, err := Start(Config{Dir: t.TempDir(), Port: RandomPort})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := s.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	if !nc.IsClosed() {
		t.Error("a connection from Connect is still open after Shutdown")
	}
}

func TestStartPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port

	_, err = Start(Config{Dir: t.TempDir(), Port: port, StartTimeout: 2 * time.Second})
	if err == nil {
		t.Fatalf("Start on port %d, which is in use, returned no error", port)
	}
	if !errors.Is(err, ErrPortInUse) {
		t.Errorf("error %q does not match ErrPortInUse", err)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(port)) || !strings.Contains(err.Error(), "another port") {
		t.Errorf("error %q should name port %d and suggest another port", err, port)
	}
}

func TestStartInvalidConfig(t *testing.T) {
	if _, err := Start(Config{}); err == nil || !strings.Contains(err.Error(), "Dir") {
		t.Errorf("Start without a directory: error %v, want one naming Config.Dir", err)
	}
	if _, err := Start(Config{Dir: t.TempDir(), Port: 70000}); err == nil || !strings.Contains(err.Error(), "70000") {
		t.Errorf("Start with port 70000: error %v, want one naming the port", err)
	}
}
