package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/batchq/batchq/store"
	"github.com/batchq/batchq/store/kvstore"
	"github.com/batchq/batchq/store/pgstore"
	"github.com/nats-io/nats.go"
)

// storeOptions select and configure the coordinator's store: Postgres when
// a database URL is given, and otherwise the JetStream key-value store.
type storeOptions struct {
	// databaseURL selects Postgres.
	databaseURL string
	// schema is the Postgres schema that holds the tables.
	schema string
	// bucket is the key-value bucket of the KV store.
	bucket string
}

// kvStoreOptions are the options of the default KV store.
func kvStoreOptions() storeOptions {
	return storeOptions{bucket: kvstore.DefaultBucket, schema: pgstore.DefaultSchema}
}

// addStoreFlags registers the flags of storeOptions. The default of
// --database-url comes from BATCHQ_DATABASE_URL.
func addStoreFlags(fs *flag.FlagSet, env Env, o *storeOptions) {
	def := ""
	if env.Getenv != nil {
		def = env.Getenv("BATCHQ_DATABASE_URL")
	}
	fs.StringVar(&o.databaseURL, "database-url", def, "Postgres URL, such as postgres://user@host:5432/db, that selects the Postgres store; empty selects the KV store on the NATS server (default from BATCHQ_DATABASE_URL)")
	fs.StringVar(&o.schema, "database-schema", pgstore.DefaultSchema, "Postgres schema that holds batchq's tables")
	fs.StringVar(&o.bucket, "kv-bucket", kvstore.DefaultBucket, "key-value bucket of the KV store, used when --database-url is empty")
}

// validate returns an error naming the flag that is invalid.
func (o storeOptions) validate() error {
	if o.databaseURL != "" {
		if o.schema == "" {
			return fmt.Errorf("--database-schema is empty; give a schema name such as %q", pgstore.DefaultSchema)
		}
		return nil
	}
	if o.bucket == "" {
		return fmt.Errorf("--kv-bucket is empty; give a bucket name such as %q", kvstore.DefaultBucket)
	}
	return nil
}

// name returns the store's name for logs.
func (o storeOptions) name() string {
	if o.databaseURL != "" {
		return "postgres"
	}
	return "kv"
}

// openStore opens the store that o selects.
func openStore(ctx context.Context, nc *nats.Conn, o storeOptions, log *slog.Logger) (store.Store, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.databaseURL != "" {
		s, err := pgstore.Open(ctx, pgstore.Config{URL: o.databaseURL, Schema: o.schema, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("open the Postgres store: %w; check --database-url", err)
		}
		return s, nil
	}
	s, err := kvstore.New(ctx, nc, kvstore.Config{Bucket: o.bucket, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("open the kv store: %w", err)
	}
	return s, nil
}
