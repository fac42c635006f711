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
