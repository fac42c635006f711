// Package addition publishes jobs.added events and waits for the
// coordinator's answer. The client and the executor's Job API share it.
package addition

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Request is one addition to publish.
type Request struct {
	BatchID string
	// Queue is the resolved queue of the batch; the event goes to its
	// subject.
	Queue       string
	AddID       string
	ParentJobID string
	ParentRole  events.Role
	Jobs        []events.JobSpec
	// MaxMessageSize bounds the encoded event.
	MaxMessageSize int
	Source         string
}

// fallbackAfter is how long Add waits for the answer event before it also
// asks the read API, which covers an answer published before this process
// subscribed, for example after a retried job published the same addition.
const fallbackAfter = 2 * time.Second

// Message encodes the jobs.added event of req and checks its size. It has
// no side effects, so a caller can check an addition before it commits to
// an add id.
func Message(req Request) (events.Message, error) {
	data := events.JobsAdded{
		BatchID:     req.BatchID,
		AddID:       req.AddID,
		ParentJobID: req.ParentJobID,
		ParentRole:  req.ParentRole,
		Jobs:        req.Jobs,
	}
	enc := events.Encoder{Source: req.Source}
	msg, err := enc.Encode(events.TypeJobsAdded, events.EventSubject(req.Queue, req.BatchID, events.TypeJobsAdded),
		events.AddMsgID(req.BatchID, req.AddID, events.TypeJobsAdded), events.Route{BatchID: req.BatchID, Queue: req.Queue}, data)
	if err != nil {
		return events.Message{}, err
	}
	if size := len(msg.Data) + 512; req.MaxMessageSize > 0 && size > req.MaxMessageSize {
		return events.Message{}, fmt.Errorf("adding %d jobs to batch %s needs a message of %d bytes, above the limit of %d; add fewer jobs per call", len(req.Jobs), req.BatchID, size, req.MaxMessageSize)
	}
	return msg, nil
}

// Add publishes the addition and returns the coordinator's answer.
func Add(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, req Request) (events.JobsAnswer, error) {
	msg, err := Message(req)
	if err != nil {
		return events.JobsAnswer{}, err
	}

	// Only the answers: the batch's jobs.added events themselves can be
	// large and many.
	answers := make(chan *nats.Msg, 64)
	var subs []*nats.Subscription
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for _, t := range []events.Type{events.TypeJobsAccepted, events.TypeJobsRejected} {
		s, err := nc.ChanSubscribe(events.EventsPrefix+".*."+req.BatchID+"."+t.Name(), answers)
		if err != nil {
			return events.JobsAnswer{}, fmt.Errorf("subscribe to answers for batch %s: %w", req.BatchID, err)
		}
		subs = append(subs, s)
	}

	ack, err := js.PublishMsg(ctx, msg.NATS())
	if err != nil {
		return events.JobsAnswer{}, fmt.Errorf("publish jobs.added for batch %s: %w", req.BatchID, err)
	}
	wait := fallbackAfter
	if ack.Duplicate {
		// The stream holds this addition already, so its answer may be
		// long gone; ask at once.
		wait = 0
	}
	fallback := time.NewTimer(wait)
	defer fallback.Stop()
	for {
		select {
		case <-ctx.Done():
			return events.JobsAnswer{}, fmt.Errorf("wait for the answer to adding jobs to batch %s: %w", req.BatchID, ctx.Err())
		case m := <-answers:
			if ans, ok := matchAnswer(m, req.AddID); ok {
				return ans, nil
			}
		case <-fallback.C:
			ans, found, err := lookup(ctx, nc, req.BatchID, req.AddID)
			if err != nil {
				return events.JobsAnswer{}, err
			}
			if found {
				return ans, nil
			}
			fallback.Reset(time.Second)
		}
	}
}

func matchAnswer(m *nats.Msg, addID string) (events.JobsAnswer, bool) {
	env, err := events.Decode(m.Data)
	if err != nil || (env.Type != events.TypeJobsAccepted && env.Type != events.TypeJobsRejected) {
		return events.JobsAnswer{}, false
	}
	ans, err := events.DecodeData[events.JobsAnswer](env)
	if err != nil || ans.AddID != addID {
		return events.JobsAnswer{}, false
	}
	return ans, true
}

func lookup(ctx context.Context, nc *nats.Conn, batchID, addID string) (events.JobsAnswer, bool, error) {
	body, _ := json.Marshal(events.AdditionRequest{BatchID: batchID, AddID: addID})
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := nc.RequestWithContext(rctx, events.APIAdditionGet, body)
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) {
		return events.JobsAnswer{}, false, nil // the coordinator may be restarting; keep waiting
	}
	if err != nil {
		return events.JobsAnswer{}, false, fmt.Errorf("ask the coordinator about addition %s: %w", addID, err)
	}
	var reply events.AdditionReply
	if err := json.Unmarshal(resp.Data, &reply); err != nil {
		return events.JobsAnswer{}, false, fmt.Errorf("decode the answer about addition %s: %w", addID, err)
	}
	if reply.Error != nil {
		if reply.Error.Code == events.CodeNotFound {
			return events.JobsAnswer{BatchID: batchID, AddID: addID, Code: events.CodeNotFound, Error: reply.Error.Message}, true, nil
		}
		return events.JobsAnswer{}, false, reply.Error
	}
	if reply.Answer == nil {
		return events.JobsAnswer{}, false, nil
	}
	return *reply.Answer, true, nil
}
