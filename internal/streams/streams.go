// Package streams creates the JetStream streams that every batchq part
// shares: the events stream and the work stream.
package streams

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Config.
const (
	// DefaultEventsMaxAge keeps events for a week, long enough for audit
	// taps that fall behind over a weekend.
	DefaultEventsMaxAge = 7 * 24 * time.Hour
	// DefaultDuplicateWindow must outlast the redelivery window: work and
	// events are redelivered after an ack wait of 30s, a few times, and a
	// republish from the outbox sweeper happens within a minute.
	DefaultDuplicateWindow = 10 * time.Minute
)

// Config sets how the streams are created.
type Config struct {
	// Replicas is the replica count of both streams. Default 1; use 3 on a
	// cluster.
	Replicas int
	// Storage is file (default) or memory storage.
	Storage jetstream.StorageType
	// EventsMaxAge is how long events are kept. Default 7 days.
	EventsMaxAge time.Duration
	// DuplicateWindow is the Nats-Msg-Id window of both streams. Default
	// 10 minutes.
	DuplicateWindow time.Duration
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.EventsMaxAge == 0 {
		c.EventsMaxAge = DefaultEventsMaxAge
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
}

func (c Config) events() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        events.EventsStream,
		Description: "batchq events: submissions, outcomes and lifecycle",
		Subjects:    []string{events.EventsPrefix + ".>"},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      c.EventsMaxAge,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
		Storage:     c.Storage,
		Discard:     jetstream.DiscardOld,
	}
}

func (c Config) work() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        events.WorkStream,
		Description: "batchq work: jobs and compensations waiting to run",
		Subjects:    []string{events.WorkPrefix + ".>", events.CompensationPrefix + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Duplicates:  c.DuplicateWindow,
		Replicas:    c.Replicas,
		Storage:     c.Storage,
	}
}

// Apply creates both streams or updates them to cfg. The coordinator calls
// it at start. A stream whose settings already match is left alone, so a
// restart does not update streams under running executors.
func Apply(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg.setDefaults()
	for _, sc := range []jetstream.StreamConfig{cfg.events(), cfg.work()} {
		if s, err := js.Stream(ctx, sc.Name); err == nil && matches(s.CachedInfo().Config, sc) {
			continue
		}
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("create or update stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// matches reports whether a stream's settings equal the ones batchq sets.
func matches(have, want jetstream.StreamConfig) bool {
	return have.Retention == want.Retention && have.MaxAge == want.MaxAge &&
		have.Duplicates == want.Duplicates && have.Replicas == want.Replicas &&
		have.Storage == want.Storage && have.Description == want.Description &&
		slices.Equal(have.Subjects, want.Subjects)
}

// Ensure creates the streams that are missing and leaves existing ones as
// they are, so executors and clients never undo the coordinator's settings.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg.setDefaults()
	for _, sc := range []jetstream.StreamConfig{cfg.events(), cfg.work()} {
		_, err := js.Stream(ctx, sc.Name)
		if err == nil {
			continue
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("look up stream %s: %w", sc.Name, err)
		}
		if _, err := js.CreateStream(ctx, sc); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("create stream %s: %w", sc.Name, err)
		}
	}
	return nil
}
