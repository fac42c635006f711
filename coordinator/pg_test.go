package coordinator

import (
	"testing"

	"github.com/batchq/batchq/internal/pgtest"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go"
)

func init() {
	if !pgtest.Available() {
		return
	}
	extraStores = append(extraStores, storeOpener{
		name: "postgres",
		open: func(t testing.TB, _ *nats.Conn) store.Store { return pgtest.Open(t) },
	})
}
