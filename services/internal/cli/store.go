package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/batchq/batchq/store"
	"github.com/batchq/batchq/store/kvstore"
	"github.com/nats-io/nats.go"
)

// storeKV selects the JetStream key-value store, which needs nothing but
// the NATS server.
const storeKV = "kv"

// storeOptions select and configure the coordinator's store.
type storeOptions struct {
	// kind is the store to open. Only storeKV exists so far.
	kind string
	// bucket is the key-value bucket of storeKV.
	bucket string
}

// addStoreFlags registers the flags of storeOptions.
func addStoreFlags(fs *flag.FlagSet, o *storeOptions) {
	fs.StringVar(&o.kind, "store", storeKV, "where the coordinator keeps batch state: \"kv\" (a JetStream key-value bucket on the NATS server)")
	fs.StringVar(&o.bucket, "kv-bucket", kvstore.DefaultBucket, "name of the key-value bucket of the kv store")
}

// validate returns an error naming the flag that is invalid.
func (o storeOptions) validate() error {
	switch o.kind {
	case storeKV:
		if o.bucket == "" {
			return fmt.Errorf("--kv-bucket is empty; give a bucket name such as %q", kvstore.DefaultBucket)
		}
		return nil
	default:
		return fmt.Errorf("unknown store %q given to --store; use %q", o.kind, storeKV)
	}
}

// openStore opens the store that o selects. To add a store, add a case
// here and a value to the --store flag.
func openStore(ctx context.Context, nc *nats.Conn, o storeOptions, log *slog.Logger) (store.Store, error) {
	switch o.kind {
	case storeKV:
		s, err := kvstore.New(ctx, nc, kvstore.Config{Bucket: o.bucket, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("open the kv store: %w", err)
		}
		return s, nil
	default:
		return nil, o.validate()
	}
}
