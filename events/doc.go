// Package events defines the batchq wire contract: CloudEvents types, NATS
// subjects, payloads, and the codec that encodes and validates every message.
//
// Every message that batchq publishes is a CloudEvents 1.0 event in structured
// JSON mode (content type application/cloudevents+json). The event id is also
// the message's Nats-Msg-Id, and it is derived from the batch, the job, the
// attempt and the outcome, so a republish after a crash is absorbed by the
// stream's duplicate window.
//
// This package imports no other batchq package, so programs that only need the
// wire format (taps, executors in other processes) can depend on it alone.
package events
