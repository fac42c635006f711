// Package pgstore implements store.Store on Postgres with pgx.
//
// Every table lives in one schema (Config.Schema), created and migrated by
// New from SQL files embedded in the binary. Store.Update runs one
// transaction per call. It locks the named batch rows with SELECT ... FOR
// UPDATE in id order, runs the update function against that locked state,
// and then writes everything the function changed with a few multi-row
// statements sent in one round trip.
//
// Job rows are written only if their status, attempt and compensation
// status still match what the transaction read. Batch rows are written only
// if their version and status still match. A writer that bypassed the batch
// lock therefore makes the update fail with store.ErrConflict, and Update
// runs it again.
//
// Tables, all in Config.Schema:
//
//	batches            one row per created batch
//	jobs               jobs (position >= 0) and callbacks (position -1)
//	batch_chunks       chunks staged by StageJobs
//	additions          applied and rejected jobs.added events
//	outbox             messages to publish after the commit
//	rejected_events    the newest Config.MaxRejected malformed events
//	schema_migrations  applied migrations
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/batchq/batchq/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of Config.
const (
	DefaultSchema         = "batchq"
	DefaultMaxRejected    = 1000
	DefaultUpdateAttempts = 10
	DefaultPruneChunk     = 500
)

// Config configures a Store.
type Config struct {
	// URL is the connection string that Open builds its pool from, as a
	// postgres:// URL or in keyword/value form. New ignores it.
	URL string
	// Schema is the Postgres schema that holds every table. New creates it
	// when missing. Default "batchq".
	Schema string
	// MaxRejected bounds how many rejected events are kept. Default 1000.
	MaxRejected int
	// UpdateAttempts bounds how often Update runs its function when the
	// commit conflicts with another writer, deadlocks or fails
	// serialization. Default 10.
	UpdateAttempts int
	// PruneChunk is how many batches Prune deletes per statement, each in
	// its own transaction. Default 500.
	PruneChunk int
	// Logger receives migrations, retries and errors that the store
	// handles itself. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if c.MaxRejected <= 0 {
		c.MaxRejected = DefaultMaxRejected
	}
	if c.UpdateAttempts <= 0 {
		c.UpdateAttempts = DefaultUpdateAttempts
	}
	if c.PruneChunk <= 0 {
		c.PruneChunk = DefaultPruneChunk
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// maxIdentifierLength is the longest identifier in bytes (NAMEDATALEN - 1).
// Postgres truncates longer names, which could make two schemas collide.
const maxIdentifierLength = 63

// Store is a store.Store on Postgres.
type Store struct {
	cfg  Config
	pool *pgxpool.Pool
	// ownsPool is set when Open built the pool, so Close closes it.
	ownsPool bool
	// schema is the quoted schema identifier that replaces {schema} in
	// queries.
	schema string
	log    *slog.Logger
}

// Open builds a connection pool from cfg.URL, checks that the server
// accepts a connection, and returns the store that New makes from the pool.
// Close closes the pool.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if strings.TrimSpace(cfg.URL) == "" {
		return nil, errors.New("pgstore: missing database URL: set Config.URL to a postgres:// URL")
	}
	poolCfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("pgstore: invalid database URL for %s: %s", hostOfURL(cfg.URL), redact(err.Error(), cfg.URL))
	}
	target := describeTarget(poolCfg.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: create pool for %s: %s", target, redact(err.Error(), cfg.URL))
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: connect to %s: %s", target, redact(err.Error(), cfg.URL))
	}
	s, err := New(ctx, pool, cfg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.ownsPool = true
	return s, nil
}

// New returns a store on an existing pool after migrating cfg.Schema to the
// newest schema. Close leaves the pool open.
func New(ctx context.Context, pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, errors.New("pgstore: nil pool")
	}
	cfg.setDefaults()
	if len(cfg.Schema) > maxIdentifierLength {
		return nil, fmt.Errorf("pgstore: schema name %q is longer than %d bytes", cfg.Schema, maxIdentifierLength)
	}
	s := &Store{
		cfg:    cfg,
		pool:   pool,
		schema: pgx.Identifier{cfg.Schema}.Sanitize(),
		log:    cfg.Logger,
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the pool when Open built it.
func (s *Store) Close() error {
	if s.ownsPool {
		s.pool.Close()
	}
	return nil
}

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool {
	return s.pool
}

// sql qualifies the table names in query, which are written as
// {schema}.name, with the store's schema.
func (s *Store) sql(query string) string {
	return strings.ReplaceAll(query, "{schema}", s.schema)
}

// describeTarget names the server and database of a connection config
// without its credentials, for error messages.
func describeTarget(c *pgx.ConnConfig) string {
	return fmt.Sprintf("host %s database %q", net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))), c.Database)
}

// hostOfURL returns the host part of a connection URL that pgx could not
// parse, on a best-effort basis.
func hostOfURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		if at := strings.LastIndex(raw, "@"); at >= 0 {
			rest := raw[at+1:]
			if end := strings.IndexAny(rest, "/?"); end >= 0 {
				rest = rest[:end]
			}
			return "host " + strconv.Quote(rest)
		}
		return "an unparsable URL"
	}
	return "host " + strconv.Quote(u.Host)
}

// redact replaces the password of connString wherever it occurs in msg.
// pgx masks passwords in its own messages, but only on a best-effort basis
// for malformed strings.
func redact(msg, connString string) string {
	for _, pw := range passwordsIn(connString) {
		if pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// passwordsIn returns the passwords that connString contains, in every
// spelling that an error message may repeat: the user-info password of a
// URL as written and decoded, a password query parameter and a password=
// keyword.
func passwordsIn(connString string) []string {
	var out []string
	if scheme := strings.Index(connString, "://"); scheme >= 0 {
		rest := connString[scheme+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
				out = append(out, pw)
			}
		}
	}
	if u, err := url.Parse(connString); err == nil {
		if pw, ok := u.User.Password(); ok {
			out = append(out, pw)
		}
		if pw := u.Query().Get("password"); pw != "" {
			out = append(out, pw, url.QueryEscape(pw))
		}
	}
	for _, field := range strings.Fields(connString) {
		if v, ok := strings.CutPrefix(field, "password="); ok {
			out = append(out, strings.Trim(v, "'"))
		}
	}
	return out
}

// retryable reports whether an update that failed with err may succeed
// when run again.
func retryable(err error) bool {
	if errors.Is(err, store.ErrConflict) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", // serialization_failure
			"40P01": // deadlock_detected
			return true
		}
	}
	return false
}
