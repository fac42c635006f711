package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/batchq/batchq/events"
	"github.com/batchq/batchq/store"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// apiTimeout bounds the store work of one API request.
const apiTimeout = 10 * time.Second

// maxResultsPage bounds the jobs in one results reply, which keeps the reply
// under the server's max payload for results of about 1 KiB.
const maxResultsPage = 500

// startAPI registers the read API as a NATS micro service. Replicas share
// the service's queue group, so each request reaches one coordinator.
func (c *Coordinator) startAPI() (micro.Service, error) {
	svc, err := micro.AddService(c.cfg.Conn, micro.Config{
		Name:        "batchq-coordinator",
		Version:     "1.0.0",
		Description: "batchq read API: batches, jobs, results, cancel",
	})
	if err != nil {
		return nil, fmt.Errorf("coordinator: start read API: %w", err)
	}
	endpoints := []struct {
		name, subject string
		handle        func(context.Context, []byte) any
	}{
		{"batch-get", events.APIBatchGet, c.handleBatch},
		{"batch-results", events.APIBatchResults, c.handleResults},
		{"job-get", events.APIJobGet, c.handleJob},
		{"batch-cancel", events.APIBatchCancel, c.handleCancel},
		{"addition-get", events.APIAdditionGet, c.handleAddition},
		{"events-rejected", events.APIRejected, c.handleRejected},
	}
	for _, e := range endpoints {
		handle := e.handle
		err := svc.AddEndpoint(e.name, micro.HandlerFunc(func(r micro.Request) {
			ctx, cancel := context.WithTimeout(context.Background(), apiTimeout)
			defer cancel()
			if err := r.RespondJSON(handle(ctx, r.Data())); err != nil {
				c.log.Warn("respond to API request", "subject", r.Subject(), "error", err)
			}
		}), micro.WithEndpointSubject(e.subject))
		if err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("coordinator: add API endpoint %s: %w", e.subject, err)
		}
	}
	return svc, nil
}

func apiError(err error) *events.APIError {
	var ce *cancelError
	switch {
	case errors.As(err, &ce):
		return &events.APIError{Code: ce.code, Message: ce.message}
	case errors.Is(err, store.ErrNotFound):
		return &events.APIError{Code: events.CodeNotFound, Message: strings.TrimPrefix(err.Error(), store.ErrNotFound.Error()+": ")}
	default:
		// Everything else comes from the store: a timeout, a lost
		// connection or a database that is down. Clients may retry.
		return &events.APIError{Code: events.CodeUnavailable, Message: "the store failed: " + err.Error()}
	}
}

// noBatch is the error for a batch id that the store does not hold.
func noBatch(id string) error {
	return fmt.Errorf("%w: no batch has id %q; check the id, and note that retention removes finished batches", store.ErrNotFound, id)
}

func invalidRequest(err error) *events.APIError {
	return &events.APIError{Code: events.CodeInvalid, Message: "invalid request: " + err.Error()}
}

func (c *Coordinator) handleBatch(ctx context.Context, data []byte) any {
	var req events.BatchRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return events.BatchReply{Error: invalidRequest(err)}
	}
	info, err := c.batchInfo(ctx, req.BatchID)
	if err != nil {
		return events.BatchReply{Error: apiError(err)}
	}
	return events.BatchReply{Batch: info}
}

// batchInfo returns the read model of a batch with its callbacks.
func (c *Coordinator) batchInfo(ctx context.Context, id string) (*events.BatchInfo, error) {
	if err := events.ValidateID("batch_id", id); err != nil {
		return nil, fmt.Errorf("%w: %v", noBatch(id), err)
	}
	b, err := c.store.Batch(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		info, pendErr := c.pendingInfo(ctx, id)
		if !errors.Is(pendErr, errStarted) {
			return info, pendErr
		}
		// The batch was stored once: it is either stored by now, when the
		// first read raced with its creation, or removed by retention.
		b, err = c.store.Batch(ctx, id)
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, noBatch(id)
	}
	if err != nil {
		return nil, err
	}
	info := b.Info()
	cbs, err := c.store.Callbacks(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, cb := range cbs {
		info.Callbacks = append(info.Callbacks, events.CallbackState{
			Kind: events.CallbackKind(cb.ID), Name: cb.Name, JobID: cb.ID, Status: cb.Status,
			Attempts: cb.Attempt, Result: cb.Result, Error: cb.Error,
		})
	}
	return &info, nil
}

// errStarted reports a batch whose batch.started event is in the stream, so
// the store held it at some point.
var errStarted = errors.New("batch was stored")

// pendingInfo returns the read model of a batch whose submission is in the
// events stream but not yet stored. It returns errStarted for a batch that
// was stored, and a not-found error when the stream holds no submission.
func (c *Coordinator) pendingInfo(ctx context.Context, id string) (*events.BatchInfo, error) {
	notFound := noBatch(id)
	stream, err := c.js.Stream(ctx, events.EventsStream)
	if err != nil {
		return nil, err
	}
	msg, err := stream.GetLastMsgForSubject(ctx, events.EventsPrefix+".*."+id+"."+events.TypeBatchSubmitted.Name())
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	_, err = stream.GetLastMsgForSubject(ctx, events.EventsPrefix+".*."+id+"."+events.TypeBatchStarted.Name())
	if err == nil {
		return nil, errStarted
	}
	if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, err
	}
	env, err := events.Decode(msg.Data)
	if err != nil {
		return nil, notFound
	}
	sub, err := events.DecodeData[events.BatchSubmitted](env)
	if err != nil {
		return nil, notFound
	}
	return &events.BatchInfo{
		ID: id, Type: sub.Type, Status: events.StatusPending, QueueName: sub.QueueName, Queue: sub.Queue,
		Total: sub.Total, CreatedAt: msg.Time,
	}, nil
}

// jobInfo returns the read model of a job. The store keeps some jobs as
// pending that are not: a parallel job whose work was published shows as
// queued, because the dispatcher does not write one row per job, and a job
// that can no longer run because its batch stopped shows as skipped, as the
// batch counts it.
func jobInfo(b *store.Batch, j *store.Job) events.JobInfo {
	info := j.Info()
	if j.Status != events.JobStatusPending || j.Role != events.RoleJob {
		return info
	}
	switch {
	case b.Type == events.Parallel && j.Position < b.Dispatching:
		info.Status = events.JobStatusQueued
	case b.Status != events.StatusRunning:
		info.Status = events.JobStatusSkipped
	}
	return info
}

func (c *Coordinator) handleResults(ctx context.Context, data []byte) any {
	var req events.ResultsRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return events.ResultsReply{Error: invalidRequest(err)}
	}
	if req.Limit <= 0 || req.Limit > maxResultsPage {
		req.Limit = maxResultsPage
	}
	b, err := c.store.Batch(ctx, req.BatchID)
	if errors.Is(err, store.ErrNotFound) {
		err = noBatch(req.BatchID)
	}
	if err != nil {
		return events.ResultsReply{Error: apiError(err)}
	}
	if req.From < 0 {
		return events.ResultsReply{Error: invalidRequest(fmt.Errorf("from %d is negative; give 0 for the first page", req.From))}
	}
	jobs, err := c.store.Jobs(ctx, req.BatchID, req.From-1, req.Limit)
	if err != nil {
		return events.ResultsReply{Error: apiError(err)}
	}
	// A page stays under half the max message size, measured as encoded
	// JSON, which escapes characters such as '<' into six bytes. One job's
	// result alone fits because executors bound it.
	reply := events.ResultsReply{Jobs: make([]events.JobInfo, 0, len(jobs))}
	size, budget := 0, c.cfg.MaxMessageSize/2
	for _, j := range jobs {
		info := jobInfo(b, j)
		encoded, err := json.Marshal(info)
		if err != nil {
			return events.ResultsReply{Error: apiError(err)}
		}
		if len(reply.Jobs) > 0 && size+len(encoded) > budget {
			break
		}
		size += len(encoded)
		reply.Jobs = append(reply.Jobs, info)
	}
	if len(reply.Jobs) > 0 {
		reply.More = reply.Jobs[len(reply.Jobs)-1].Position < b.Total-1
	}
	return reply
}

func (c *Coordinator) handleJob(ctx context.Context, data []byte) any {
	var req events.JobRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return events.JobReply{Error: invalidRequest(err)}
	}
	b, err := c.store.Batch(ctx, req.BatchID)
	if errors.Is(err, store.ErrNotFound) {
		err = noBatch(req.BatchID)
	}
	if err != nil {
		return events.JobReply{Error: apiError(err)}
	}
	j, err := c.store.Job(ctx, req.BatchID, req.JobID)
	if errors.Is(err, store.ErrNotFound) {
		err = fmt.Errorf("%w: batch %s has no job %q; jobs have their position as id, callbacks on_complete and on_failure", store.ErrNotFound, req.BatchID, req.JobID)
	}
	if err != nil {
		return events.JobReply{Error: apiError(err)}
	}
	info := jobInfo(b, j)
	return events.JobReply{Job: &info}
}

func (c *Coordinator) handleCancel(ctx context.Context, data []byte) any {
	var req events.CancelRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return events.BatchReply{Error: invalidRequest(err)}
	}
	if err := events.ValidateID("batch_id", req.BatchID); err != nil {
		return events.BatchReply{Error: invalidRequest(err)}
	}
	if len(req.Reason) > maxTextBytes {
		return events.BatchReply{Error: invalidRequest(fmt.Errorf("the reason is %d bytes; give at most %d", len(req.Reason), maxTextBytes))}
	}
	var a *applier
	msgs, err := c.store.Update(ctx, []string{req.BatchID}, func(tx store.Tx) error {
		a = c.newApplier(ctx, tx)
		_, err := a.cancel(req.BatchID, req.Reason)
		return err
	})
	if err != nil {
		return events.BatchReply{Error: apiError(err)}
	}
	c.log.Info("batch cancelled", "batch_id", req.BatchID, "reason", req.Reason)
	c.relay(ctx, msgs, false)
	info, err := c.batchInfo(ctx, req.BatchID)
	if err != nil {
		return events.BatchReply{Error: apiError(err)}
	}
	return events.BatchReply{Batch: info}
}

func (c *Coordinator) handleAddition(ctx context.Context, data []byte) any {
	var req events.AdditionRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return events.AdditionReply{Error: invalidRequest(err)}
	}
	if err := events.ValidateID("batch_id", req.BatchID); err != nil {
		return events.AdditionReply{Error: invalidRequest(err)}
	}
	var answer *events.JobsAnswer
	_, err := c.store.Update(ctx, []string{req.BatchID}, func(tx store.Tx) error {
		answer = nil
		if _, err := tx.Batch(req.BatchID); err != nil {
			return err
		}
		adds, err := tx.Additions(ctx, req.BatchID, []string{req.AddID})
		if err != nil {
			return err
		}
		if a, ok := adds[req.AddID]; ok {
			answer = &events.JobsAnswer{BatchID: req.BatchID, AddID: a.ID, Count: a.Count, FirstPosition: a.FirstPosition, Code: a.Code, Error: a.Error}
		}
		return nil
	})
	if err != nil {
		return events.AdditionReply{Error: apiError(err)}
	}
	return events.AdditionReply{Answer: answer}
}

func (c *Coordinator) handleRejected(ctx context.Context, data []byte) any {
	var req events.RejectedRequest
	if len(data) > 0 {
		if err := json.Unmarshal(data, &req); err != nil {
			return events.RejectedReply{Error: invalidRequest(err)}
		}
	}
	if req.Limit <= 0 || req.Limit > 100 {
		req.Limit = 100
	}
	evs, err := c.store.Rejected(ctx, req.Limit)
	if err != nil {
		return events.RejectedReply{Error: apiError(err)}
	}
	return events.RejectedReply{Events: evs}
}
