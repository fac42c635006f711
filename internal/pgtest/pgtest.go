// Package pgtest opens Postgres stores on fresh schemas for tests.
//
// Tests read the server's URL from BATCHQ_TEST_DATABASE_URL and skip when it
// is unset, unless BATCHQ_REQUIRE_POSTGRES is set (CI sets both), in which
// case a missing URL fails the test.
package pgtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/batchq/batchq/store/pgstore"
	"github.com/jackc/pgx/v5"
)

// URLVar names the environment variable that holds the test database URL.
const URLVar = "BATCHQ_TEST_DATABASE_URL"

// RequireVar names the environment variable that turns a missing URL into a
// failure.
const RequireVar = "BATCHQ_REQUIRE_POSTGRES"

// URL returns the test database URL, skipping or failing the test when it
// is unset.
func URL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv(URLVar)
	if url == "" {
		if os.Getenv(RequireVar) != "" {
			tb.Fatalf("%s is empty but %s is set: the Postgres tests must run", URLVar, RequireVar)
		}
		tb.Skipf("set %s (for example postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run the Postgres tests", URLVar)
	}
	return url
}

// Available reports whether the Postgres tests should run.
func Available() bool {
	return os.Getenv(URLVar) != "" || os.Getenv(RequireVar) != ""
}

var schemaSeq atomic.Int64

// Open returns a store on a schema that no other test uses; the schema is
// dropped when the test ends.
func Open(tb testing.TB) *pgstore.Store {
	tb.Helper()
	url := URL(tb)
	schema := fmt.Sprintf("test_%d_%d", os.Getpid(), schemaSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := pgstore.Open(ctx, pgstore.Config{URL: url, Schema: schema, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatalf("open Postgres store: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.Pool().Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			tb.Errorf("drop test schema %s: %v", schema, err)
		}
		s.Close()
	})
	return s
}
