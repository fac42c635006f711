package pgstore

import (
	"context"
	"embed"
	"fmt"
	"hash/fnv"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrationFiles holds the schema migrations, named NNNN_description.sql
// and applied in version order.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded migrations in version order.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("pgstore: list migrations: %w", err)
	}
	seen := make(map[int]string, len(names))
	out := make([]migration, 0, len(names))
	for _, name := range names {
		base := path.Base(name)
		prefix, _, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(prefix)
		if !ok || err != nil || version <= 0 {
			return nil, fmt.Errorf("pgstore: migration file %s is not named NNNN_description.sql", base)
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("pgstore: migrations %s and %s share version %d", other, base, version)
		}
		seen[version] = base
		data, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("pgstore: read migration %s: %w", base, err)
		}
		out = append(out, migration{version: version, name: base, sql: string(data)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// migrationLockKey returns the advisory lock key of a schema's migrations,
// so stores on different schemas migrate without waiting for each other.
func migrationLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("batchq migrate " + schema))
	return int64(h.Sum64())
}

// migrate creates the schema when missing and applies the migrations that
// schema_migrations does not list. Everything runs in one transaction that
// holds a transaction-level advisory lock, so concurrent starts apply each
// migration once, the lock never outlives the transaction on a pooled
// connection, and a failed migration leaves the schema as it was.
//
// NOTE: statements that Postgres refuses inside a transaction block, such as
// CREATE INDEX CONCURRENTLY, cannot be used in a migration.
func (s *Store) migrate(ctx context.Context) error {
	migrations, err := loadMigrations()
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: begin: %w", s.cfg.Schema, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey(s.cfg.Schema)); err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: take migration lock: %w", s.cfg.Schema, err)
	}
	applied, err := s.prepareMigrationTable(ctx, tx)
	if err != nil {
		return err
	}

	known := make(map[int]bool, len(migrations))
	for _, m := range migrations {
		known[m.version] = true
		if applied[m.version] {
			continue
		}
		if err := s.applyMigration(ctx, tx, m); err != nil {
			return err
		}
	}
	for v := range applied {
		if !known[v] {
			s.log.Warn("pgstore: schema has a migration version that this build does not include, so a newer build migrated it",
				"schema", s.cfg.Schema, "version", v)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("pgstore: migrate schema %s: commit: %w", s.cfg.Schema, err)
	}
	return nil
}

// prepareMigrationTable creates the schema and schema_migrations when
// missing and returns the applied versions.
func (s *Store) prepareMigrationTable(ctx context.Context, tx pgx.Tx) (map[int]bool, error) {
	// Checking first means that a role without CREATE on the database can
	// use a schema that an administrator created.
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", s.cfg.Schema).Scan(&exists); err != nil {
		return nil, fmt.Errorf("pgstore: migrate schema %s: look up schema: %w", s.cfg.Schema, err)
	}

	if !exists {
		if _, err := tx.Exec(ctx, "CREATE SCHEMA "+s.schema); err != nil {
			return nil, fmt.Errorf("pgstore: create schema %s: %w", s.cfg.Schema, err)
		}
	}
	_, err := tx.Exec(ctx, s.sql(`CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
		version    integer     PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`))
	if err != nil {
		return nil, fmt.Errorf("pgstore: migrate schema %s: create schema_migrations: %w", s.cfg.Schema, err)
	}

	rows, err := tx.Query(ctx, s.sql("SELECT version FROM {schema}.schema_migrations"))
	if err != nil {
		return nil, fmt.Errorf("pgstore: migrate schema %s: read applied versions: %w", s.cfg.Schema, err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("pgstore: migrate schema %s: read applied versions: %w", s.cfg.Schema, err)
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}
	return applied, nil
}

func (s *Store) applyMigration(ctx context.Context, tx pgx.Tx, m migration) error {
	// The migration files use unqualified names, so search_path puts their
	// tables in the store's schema until the transaction ends.
	if _, err := tx.Exec(ctx, "SET LOCAL search_path TO "+s.schema); err != nil {
		return fmt.Errorf("pgstore: migration %s: set search_path: %w", m.name, err)
	}
	// Exec without arguments uses the simple query protocol, which runs a
	// file of several statements.
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return fmt.Errorf("pgstore: migration %s on schema %s failed: %w", m.name, s.cfg.Schema, err)
	}
	if _, err := tx.Exec(ctx, s.sql("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"), m.version); err != nil {
		return fmt.Errorf("pgstore: migration %s: record version: %w", m.name, err)
	}
	s.log.Info("pgstore: applied migration", "schema", s.cfg.Schema, "migration", m.name)
	return nil
}
