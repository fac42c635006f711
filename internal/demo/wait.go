package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/batchq/batchq"
	"github.com/batchq/batchq/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Poll delays of WaitCallback. The executor's job.completed event arrives
// before the coordinator has stored the outcome, so after each event the
// callback is read again with growing delays, up to a maximum that also
// covers events missed while the connection reconnected.
const (
	callbackMinPoll = 20 * time.Millisecond
	callbackMaxPoll = time.Second
)

// progressBarWidth is the width of the progress bar in characters.
const progressBarWidth = 40

// waitWithProgress waits for a batch to be final. When progress is not
// nil it redraws a progress bar there every interval until then.
func waitWithProgress(ctx context.Context, client *batchq.Client, id string, progress io.Writer, interval time.Duration) (*batchq.BatchInfo, error) {
	if progress == nil {
		return client.Wait(ctx, id)
	}
	stop := make(chan struct{})
	drawn := make(chan struct{})
	go func() {
		defer close(drawn)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			if info, err := client.Batch(ctx, id); err == nil {
				drawProgress(progress, info)
			}
			select {
			case <-stop:
				return
			case <-ticker.C:
			}
		}
	}()
	info, err := client.Wait(ctx, id)
	close(stop)
	<-drawn
	if info != nil {
		drawProgress(progress, info)
	}
	fmt.Fprintln(progress)
	return info, err
}

// drawProgress redraws the progress bar of a batch on the current line.
func drawProgress(w io.Writer, info *batchq.BatchInfo) {
	filled := 0
	if info.Total > 0 {
		filled = progressBarWidth * info.Completed / info.Total
	}
	bar := strings.Repeat("#", filled) + strings.Repeat(".", progressBarWidth-filled)
	line := fmt.Sprintf("\r[%s] %3d%% %d/%d jobs", bar, info.Progress, info.Completed, info.Total)
	if info.Failed > 0 {
		line += fmt.Sprintf(", %d failed", info.Failed)
	}
	fmt.Fprintf(w, "%s %s\033[K", line, info.Status)
}

// WaitCallback waits until the callback jobID ("on_complete" or
// "on_failure") of a final batch has finished, and returns it. A callback
// that failed for good or was skipped returns an error with its error
// message. It reads the callback again after each job event of the batch,
// and at least every second.
func WaitCallback(ctx context.Context, client *batchq.Client, batchID, jobID string) (*batchq.JobInfo, error) {
	if err := events.ValidateID("batch id", batchID); err != nil {
		return nil, fmt.Errorf("%w: %v", batchq.ErrBatchNotFound, err)
	}
	wake := make(chan *nats.Msg, 64)
	sub, err := client.Conn().ChanSubscribe(events.EventsPrefix+".*."+batchID+".job.*", wake)
	if err != nil {
		return nil, fmt.Errorf("subscribe to the job events of batch %s: %w", batchID, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	delay := callbackMinPoll
	timer := time.NewTimer(delay)
	defer timer.Stop()

	for {
		job, err := client.JobResult(ctx, batchID, jobID)
		switch {
		case errors.Is(err, batchq.ErrJobNotFound):
			// The coordinator has not queued the callback yet.
		case err != nil:
			return nil, fmt.Errorf("read callback %s of batch %s: %w", jobID, batchID, err)
		case job.Status == events.JobStatusCompleted:
			return job, nil
		case job.Status.Final():
			return job, fmt.Errorf("callback %s (%s) of batch %s %s after %d attempts: %s", jobID, job.Name, batchID, job.Status, job.Attempts, job.Error)
		}
		timer.Reset(delay)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for callback %s of batch %s: %w", jobID, batchID, ctx.Err())
		case <-wake:
			delay = callbackMinPoll
		case <-timer.C:
			delay = min(2*delay, callbackMaxPoll)
		}
	}
}

// followBatch calls fn with every event of a batch, in the order in which
// the events stream stored them, starting from the first. It returns when
// fn reports that it is done, when fn fails, or when ctx ends. The stream
// keeps every event, so events published before the call are not missed.
func followBatch(ctx context.Context, nc *nats.Conn, batchID string, fn func(events.Envelope) (done bool, err error)) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	cons, err := js.OrderedConsumer(ctx, events.EventsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.EventsPrefix + ".*." + batchID + ".>"},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("follow the events of batch %s: %w", batchID, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("follow the events of batch %s: %w", batchID, err)
	}
	defer msgs.Stop()
	for {
		msg, err := msgs.Next(jetstream.NextContext(ctx))
		if err != nil {
			return fmt.Errorf("follow the events of batch %s: %w", batchID, err)
		}
		env, err := events.Decode(msg.Data())
		if err != nil {
			continue // the coordinator rejects and records malformed events
		}
		done, err := fn(env)
		if err != nil || done {
			return err
		}
	}
}

// finalLifecycle reports whether t is the event of a batch that settled.
func finalLifecycle(t events.Type) bool {
	return t == events.TypeBatchCompleted || t == events.TypeBatchFailed || t == events.TypeBatchCancelled
}
