package batchq

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// TestNATSConfParses checks that the production nats.conf is valid for the
// nats-server version batchq builds with.
func TestNATSConfParses(t *testing.T) {
	for _, v := range []string{"COORDINATOR_PASSWORD", "EXECUTOR_PASSWORD", "CLIENT_PASSWORD"} {
		t.Setenv(v, "test-secret")
	}
	opts, err := server.ProcessConfigFile("nats.conf")
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	if !opts.JetStream {
		t.Error("nats.conf does not enable JetStream")
	}
	if !opts.SyncAlways {
		t.Error("nats.conf should sync every write")
	}
	if opts.MaxPayload != 1<<20 {
		t.Errorf("max_payload = %d, want 1 MiB", opts.MaxPayload)
	}
	if len(opts.Users) != 3 {
		t.Errorf("nats.conf defines %d users, want 3", len(opts.Users))
	}
}
