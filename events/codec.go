package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
)

// ContentType is the content type of every batchq message: a CloudEvent in
// structured JSON mode.
const ContentType = "application/cloudevents+json"

// Extension attribute names. CloudEvents allows only lowercase letters and
// digits in them.
const (
	ExtBatchID = "batchid"
	ExtJobID   = "jobid"
	ExtQueue   = "queue"
	ExtAttempt = "attempt"
)

// Message is an encoded event, ready to publish with its deterministic id.
type Message struct {
	Subject string
	ID      string
	Type    Type
	Data    []byte
}

// NATS returns the message as a NATS message with the Nats-Msg-Id header
// set, and the Content-Type header set when the message is an event.
func (m Message) NATS() *nats.Msg {
	msg := nats.NewMsg(m.Subject)
	msg.Header.Set(nats.MsgIdHdr, m.ID)
	if m.Type != "" {
		msg.Header.Set("Content-Type", ContentType)
	}
	msg.Data = m.Data
	return msg
}

// Route holds the routing ids that every event carries as extensions.
type Route struct {
	BatchID string
	JobID   string
	Queue   string
	Attempt int
}

// Encoder builds events with a fixed source.
type Encoder struct {
	// Source is the CloudEvents source, for example "batchq/executor".
	Source string
}

// Encode builds the event of type t with id and data, validates it, and
// returns it as a message for subject.
func (enc Encoder) Encode(t Type, subject, id string, route Route, data any) (Message, error) {
	e := cloudevents.New()
	e.SetID(id)
	e.SetSource(enc.Source)
	e.SetType(string(t))
	e.SetTime(time.Now().UTC())
	if route.BatchID != "" {
		e.SetExtension(ExtBatchID, route.BatchID)
	}
	if route.JobID != "" {
		e.SetExtension(ExtJobID, route.JobID)
		e.SetSubject(route.JobID)
	}
	if route.Queue != "" {
		e.SetExtension(ExtQueue, route.Queue)
	}
	if route.Attempt > 0 {
		e.SetExtension(ExtAttempt, route.Attempt)
	}
	if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
		return Message{}, fmt.Errorf("encode %s data: %w", t, err)
	}
	if err := e.Validate(); err != nil {
		return Message{}, fmt.Errorf("encode %s: invalid event: %w", t, err)
	}
	raw, err := json.Marshal(e)
	if err != nil {
		return Message{}, fmt.Errorf("encode %s: %w", t, err)
	}
	return Message{Subject: subject, ID: id, Type: t, Data: raw}, nil
}

// Envelope is a decoded event whose data is not yet decoded.
type Envelope struct {
	ID      string
	Source  string
	Type    Type
	Time    time.Time
	BatchID string
	JobID   string
	Queue   string
	Data    []byte
}

// DecodeError reports a message that is not a valid batchq event. The
// coordinator terminates such messages and records Reason.
type DecodeError struct {
	Reason string
}

func (e *DecodeError) Error() string {
	return "invalid event: " + e.Reason
}

// ErrInvalid matches every *DecodeError with errors.Is.
var ErrInvalid = errors.New("invalid event")

// Is reports whether target is ErrInvalid.
func (e *DecodeError) Is(target error) bool {
	return target == ErrInvalid
}

func invalid(format string, args ...any) error {
	return &DecodeError{Reason: fmt.Sprintf(format, args...)}
}

// Decode parses a structured CloudEvent and checks that it is valid
// CloudEvents 1.0 with a known batchq type and a valid batch id.
func Decode(data []byte) (Envelope, error) {
	var e cloudevents.Event
	if err := json.Unmarshal(data, &e); err != nil {
		return Envelope{}, invalid("not a structured CloudEvent: %v", err)
	}
	if v := e.SpecVersion(); v != cloudevents.CloudEventsVersionV1 {
		return Envelope{}, invalid("specversion %q is not supported; use %q", v, cloudevents.CloudEventsVersionV1)
	}
	if err := e.Validate(); err != nil {
		return Envelope{}, invalid("%v", err)
	}
	t := Type(e.Type())
	if !t.Known() {
		return Envelope{}, invalid("unknown type %q", e.Type())
	}
	if ct := e.DataContentType(); ct != "" && !strings.HasPrefix(ct, cloudevents.ApplicationJSON) {
		return Envelope{}, invalid("datacontenttype %q is not supported; use %q", ct, cloudevents.ApplicationJSON)
	}
	env := Envelope{
		ID:     e.ID(),
		Source: e.Source(),
		Type:   t,
		Time:   e.Time(),
		Data:   e.Data(),
	}
	env.BatchID, _ = stringExtension(e, ExtBatchID)
	env.JobID, _ = stringExtension(e, ExtJobID)
	env.Queue, _ = stringExtension(e, ExtQueue)
	if env.BatchID != "" {
		if err := ValidateID("batchid", env.BatchID); err != nil {
			return Envelope{}, invalid("%v", err)
		}
	}
	if len(env.Data) == 0 {
		return Envelope{}, invalid("%s event %q has no data", t.Name(), env.ID)
	}
	return env, nil
}

func stringExtension(e cloudevents.Event, name string) (string, bool) {
	v, ok := e.Extensions()[name]
	if !ok {
		return "", false
	}
	switch s := v.(type) {
	case string:
		return s, true
	case int32:
		return strconv.Itoa(int(s)), true
	default:
		return fmt.Sprint(v), true
	}
}

// validator is implemented by payloads that check their own fields.
type validator interface {
	Validate() error
}

// DecodeData decodes the data of env into a T and validates it. It returns
// a *DecodeError when the data does not match the event type.
func DecodeData[T any](env Envelope) (T, error) {
	var v T
	if err := json.Unmarshal(env.Data, &v); err != nil {
		return v, invalid("%s data: %v", env.Type.Name(), err)
	}
	if val, ok := any(&v).(validator); ok {
		if err := val.Validate(); err != nil {
			return v, invalid("%s data: %v", env.Type.Name(), err)
		}
	}
	return v, nil
}

// ValidateID returns an error unless id can be a batch id: one subject token
// of letters, digits, '-' and '_', at most 128 bytes.
func ValidateID(field, id string) error {
	if id == "" {
		return fmt.Errorf("%s is missing", field)
	}
	if len(id) > 128 {
		return fmt.Errorf("%s %q is longer than 128 bytes", field, id[:32]+"...")
	}
	for _, r := range id {
		if !isTokenRune(r) {
			return fmt.Errorf("%s %q contains %q; use letters, digits, '-' and '_' only", field, id, r)
		}
	}
	return nil
}
