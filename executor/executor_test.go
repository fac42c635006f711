package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batchq/batchq/internal/natstest"
)

func TestConfigValidation(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	cases := []struct {
		name   string
		cfg    Config
		errSub string
	}{
		{"no connection", Config{}, "Config.Conn is nil"},
		{"bad queue", Config{Conn: nc, Queue: "a.b"}, `invalid queue name "a.b"`},
		{"negative concurrency", Config{Conn: nc, Concurrency: -1}, "Concurrency -1"},
		{"short ack wait", Config{Conn: nc, AckWait: time.Millisecond}, "AckWait 1ms"},
		{"backoff inverted", Config{Conn: nc, MinBackoff: time.Minute, MaxBackoff: time.Second}, "MinBackoff 1m0s is above MaxBackoff 1s"},
		{"max deliver one", Config{Conn: nc, MaxDeliver: 1}, "MaxDeliver 1 is below 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.errSub) {
				t.Errorf("New error = %v, want one containing %q", err, tc.errSub)
			}
		})
	}
	if _, err := New(Config{Conn: nc}); err != nil {
		t.Errorf("defaults rejected: %v", err)
	}
}

func TestHandlePanicsOnMistakes(t *testing.T) {
	srv := natstest.Start(t)
	x, err := New(Config{Conn: natstest.Connect(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	x.Handle("a", func(context.Context, *Job) error { return nil })
	for name, fn := range map[string]func(){
		"duplicate": func() { x.Handle("a", func(context.Context, *Job) error { return nil }) },
		"empty":     func() { x.Handle("", func(context.Context, *Job) error { return nil }) },
		"nil":       func() { x.Handle("b", nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("Handle did not panic")
				}
			}()
			fn()
		})
	}
}

func TestBackoffDoublesWithinBounds(t *testing.T) {
	x := &Executor{cfg: Config{MinBackoff: time.Second, MaxBackoff: 10 * time.Second}}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 30: 10 * time.Second} {
		for range 20 {
			got := x.backoff(attempt)
			if got > want || got < want*8/10 {
				t.Fatalf("backoff(%d) = %s, want %s minus at most 20%%", attempt, got, want)
			}
		}
	}
}

func TestPermanentUnwraps(t *testing.T) {
	base := errors.New("bad input")
	err := fmt.Errorf("handler: %w", Permanent(base))
	var p *PermanentError
	if !errors.As(err, &p) || !errors.Is(err, base) {
		t.Errorf("Permanent error does not unwrap: %v", err)
	}
	if Permanent(nil) != nil {
		t.Error("Permanent(nil) is not nil")
	}
}

func TestTrimStackBoundsPanicErrors(t *testing.T) {
	stack := strings.Repeat("frame\n", 500)
	if n := strings.Count(trimStack([]byte(stack)), "\n"); n > 23 {
		t.Errorf("trimmed stack keeps %d lines", n)
	}
}
