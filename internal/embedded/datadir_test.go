package embedded

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestDataDirInUse starts a second server on the data directory of a
// running one, as a second "batchq dev --port N" with the default --data
// would: it fails instead of sharing the files, and no message is lost.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	first, err := Start(Config{Dir: dir, Port: RandomPort})
	if err != nil {
		t.Fatal(err)
	}
	js1 := jetStreamOf(t, first)
	if _, err := js1.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js1.Publish(ctx, "s.a", []byte("1")); err != nil {
		t.Fatal(err)
	}

	second, err := Start(Config{Dir: dir, Port: RandomPort})
	if err != nil {
		first.Shutdown()
		return // rejected: the data directory is protected
	}
	js2 := jetStreamOf(t, second)
	if _, err := js1.Publish(ctx, "s.b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if _, err := js2.Publish(ctx, "s.c", []byte("3")); err != nil {
		t.Fatal(err)
	}
	first.Shutdown()
	second.Shutdown()

	third, err := Start(Config{Dir: dir, Port: RandomPort})
	if err != nil {
		t.Fatalf("restart on the shared directory: %v", err)
	}
	defer third.Shutdown()
	stream, err := jetStreamOf(t, third).Stream(ctx, "S")
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Errorf("a second server started on a data directory in use; after both stopped the stream holds %d of the 3 acknowledged messages", info.State.Msgs)
}

func jetStreamOf(t *testing.T, s *Server) jetstream.JetStream {
	t.Helper()
	nc, err := s.Connect("datadir-test")
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}
