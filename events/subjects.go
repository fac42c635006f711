package events

import (
	"fmt"
	"strings"
)

// Stream and subject names. Subjects are per named queue: the queue is always
// the third token, so a tap can follow one queue with a single wildcard.
const (
	// EventsStream is the Limits stream that holds every event, kept for days.
	EventsStream = "BATCHQ_EVENTS"
	// WorkStream is the WorkQueue stream that holds jobs and compensations
	// waiting to run.
	WorkStream = "BATCHQ_WORK"

	// EventsPrefix starts every event subject:
	// batchq.events.<queue>.<batch id>.<type name>.
	EventsPrefix = "batchq.events"
	// WorkPrefix starts every job work subject: batchq.work.<queue>.<batch id>.
	WorkPrefix = "batchq.work"
	// CompensationPrefix starts every compensation work subject:
	// batchq.compensation.<queue>.<batch id>.
	CompensationPrefix = "batchq.compensation"
	// APIPrefix starts the request/reply subjects that the coordinator serves.
	APIPrefix = "batchq.api"
)

// EventSubject returns the subject of an event of type t about a batch.
func EventSubject(queue, batchID string, t Type) string {
	return EventsPrefix + "." + queue + "." + batchID + "." + t.Name()
}

// EventFilter returns the subject filter that matches events of type t on
// every queue and batch.
func EventFilter(t Type) string {
	return EventsPrefix + ".*.*." + t.Name()
}

// BatchEventsFilter returns the subject filter that matches every batch.*
// event of one batch on any queue: the lifecycle events, and also the
// batch.jobs and batch.submitted events of its dispatch.
func BatchEventsFilter(batchID string) string {
	return EventsPrefix + ".*." + batchID + ".batch.*"
}

// WorkSubject returns the subject of a job's work message.
func WorkSubject(queue, batchID string) string {
	return WorkPrefix + "." + queue + "." + batchID
}

// WorkFilter returns the filter of a queue's job consumer.
func WorkFilter(queue string) string {
	return WorkPrefix + "." + queue + ".*"
}

// CompensationSubject returns the subject of a compensation's work message.
func CompensationSubject(queue, batchID string) string {
	return CompensationPrefix + "." + queue + "." + batchID
}

// CompensationFilter returns the filter of a queue's compensation consumer.
func CompensationFilter(queue string) string {
	return CompensationPrefix + "." + queue + ".*"
}

// WorkConsumer returns the durable consumer name of a queue's executors.
func WorkConsumer(queue string) string {
	return "work_" + queue
}

// CompensationConsumer returns the durable consumer name of a queue's
// compensators.
func CompensationConsumer(queue string) string {
	return "compensation_" + queue
}

// ValidateQueueName returns an error unless name can be used as a queue: one
// subject token of letters, digits, '-' and '_', at most 64 bytes. Such a
// name is also valid inside a consumer name.
func ValidateQueueName(name string) error {
	if name == "" {
		return fmt.Errorf("invalid queue name %q: it is empty; use a name such as \"default\"", name)
	}
	if len(name) > 64 {
		return fmt.Errorf("invalid queue name %q: it is %d bytes long; use at most 64", name, len(name))
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return !isTokenRune(r) }); i >= 0 {
		return fmt.Errorf("invalid queue name %q: character %q is not allowed; use letters, digits, '-' and '_' only, because the name is one NATS subject token", name, name[i])
	}
	return nil
}

func isTokenRune(r rune) bool {
	return r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')
}
