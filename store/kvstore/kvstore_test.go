package kvstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/batchq/batchq/internal/natstest"
	"github.com/batchq/batchq/store"
	"github.com/batchq/batchq/store/kvstore"
	"github.com/batchq/batchq/store/storetest"
	"github.com/nats-io/nats.go/jetstream"
)

var bucketSeq atomic.Int64

func TestConformance(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := kvstore.New(context.Background(), nc, kvstore.Config{
			Bucket: fmt.Sprintf("test%d", bucketSeq.Add(1)),
			// Few references per record, so that ManyAdditions moves
			// them to index keys many times.
			RecordChunks: 16,
		})
		if err != nil {
			t.Fatalf("kvstore.New: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestOutboxTombstonesExpire deletes outbox messages and checks that their
// delete markers carry a TTL, so listings do not scan them forever.
func TestOutboxTombstonesExpire(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	ctx := context.Background()
	s, err := kvstore.New(ctx, nc, kvstore.Config{Bucket: "tombstones"})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, "KV_tombstones")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := stream.CachedInfo().Config; !cfg.AllowMsgTTL || !cfg.AllowAtomicPublish {
		t.Fatalf("bucket stream allows TTLs %v and atomic publish %v, want both", cfg.AllowMsgTTL, cfg.AllowAtomicPublish)
	}
	msg := store.OutboxMessage{Key: "o.b1.1", BatchID: "b1"}
	if err := s.DeleteOutbox(ctx, []store.OutboxMessage{msg}); err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetLastMsgForSubject(ctx, "$KV.tombstones.o.b1.1")
	if err != nil {
		t.Fatal(err)
	}
	if raw.Header.Get("KV-Operation") != "DEL" || raw.Header.Get(jetstream.MsgTTLHeader) == "" {
		t.Errorf("delete marker headers = %v, want KV-Operation DEL with a TTL", raw.Header)
	}
}

// TestReopenBucket opens a store twice on one bucket, as a restarted
// coordinator does.
func TestReopenBucket(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	for i := range 2 {
		if _, err := kvstore.New(context.Background(), nc, kvstore.Config{Bucket: "reopen"}); err != nil {
			t.Fatalf("open %d: %v", i+1, err)
		}
	}
}
