package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2/event"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	enc := Encoder{Source: "batchq/test"}
	data := JobCompleted{BatchID: "b1", JobID: "3", Role: RoleJob, Attempt: 2, Result: json.RawMessage(`{"n":1}`), Deliveries: 1}
	msg, err := enc.Encode(TypeJobCompleted, EventSubject("default", "b1", TypeJobCompleted),
		JobMsgID("b1", "3", TypeJobCompleted, 2), Route{BatchID: "b1", JobID: "3", Queue: "default", Attempt: 2}, data)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "batchq.events.default.b1.job.completed" || msg.ID != "b1:3:job.completed:2" {
		t.Errorf("message subject %q id %q", msg.Subject, msg.ID)
	}
	nm := msg.NATS()
	if nm.Header.Get("Nats-Msg-Id") != msg.ID || nm.Header.Get("Content-Type") != ContentType {
		t.Errorf("headers = %v", nm.Header)
	}

	var ce cloudevents.Event
	if err := json.Unmarshal(msg.Data, &ce); err != nil {
		t.Fatal(err)
	}
	if err := ce.Validate(); err != nil {
		t.Errorf("sdk-go rejects the event: %v", err)
	}
	if ce.SpecVersion() != "1.0" || ce.DataContentType() != "application/json" {
		t.Errorf("specversion %q datacontenttype %q", ce.SpecVersion(), ce.DataContentType())
	}

	env, err := Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	if env.Type != TypeJobCompleted || env.BatchID != "b1" || env.JobID != "3" || env.Queue != "default" || env.ID != msg.ID {
		t.Errorf("envelope = %+v", env)
	}
	got, err := DecodeData[JobCompleted](env)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempt != 2 || string(got.Result) != `{"n":1}` {
		t.Errorf("data = %+v", got)
	}
}

func TestDecodeRejects(t *testing.T) {
	cases := []struct {
		name, data, reason string
	}{
		{"not json", `garbage`, "not a structured CloudEvent"},
		{"old specversion", `{"specversion":"0.3","id":"1","source":"s","type":"batchq.job.completed","data":{}}`, `specversion "0.3" is not supported`},
		{"unknown specversion", `{"specversion":"7","id":"1","source":"s","type":"batchq.job.completed","data":{}}`, "specversion"},
		{"missing id", `{"specversion":"1.0","source":"s","type":"batchq.job.completed","data":{}}`, "id"},
		{"unknown type", `{"specversion":"1.0","id":"1","source":"s","type":"com.example.other","data":{}}`, `unknown type "com.example.other"`},
		{"no data", `{"specversion":"1.0","id":"1","source":"s","type":"batchq.job.completed"}`, "has no data"},
		{"bad batch id", `{"specversion":"1.0","id":"1","source":"s","type":"batchq.job.completed","batchid":"a.b","data":{}}`, "batchid"},
		{"xml data", `{"specversion":"1.0","id":"1","source":"s","type":"batchq.job.completed","datacontenttype":"application/xml","data":"<a/>"}`, "datacontenttype"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.data))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode error = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q does not contain %q", err, tc.reason)
			}
		})
	}
}

func TestDecodeDataValidates(t *testing.T) {
	env := Envelope{Type: TypeJobCompleted, Data: []byte(`{"batch_id":"b1","job_id":"","role":"job","attempt":1}`)}
	if _, err := DecodeData[JobCompleted](env); err == nil || !strings.Contains(err.Error(), "job_id is missing") {
		t.Errorf("missing job id: %v", err)
	}
	env.Data = []byte(`{"batch_id":"b1","job_id":"1","role":"boss","attempt":1}`)
	if _, err := DecodeData[JobCompleted](env); err == nil || !strings.Contains(err.Error(), `role "boss"`) {
		t.Errorf("bad role: %v", err)
	}
	env.Data = []byte(`{"batch_id":"b1","job_id":"1","role":"job","attempt":0}`)
	if _, err := DecodeData[JobCompleted](env); err == nil || !strings.Contains(err.Error(), "attempt 0") {
		t.Errorf("attempt 0: %v", err)
	}
	env = Envelope{Type: TypeBatchSubmitted, Data: []byte(`{"batch_id":"b1","type":"chain","queue":"q","options":{"allow_failures":true},"total":1,"jobs":[{"id":"0","position":0,"name":"a"}]}`)}
	if _, err := DecodeData[BatchSubmitted](env); err == nil || !strings.Contains(err.Error(), "allow_failures") {
		t.Errorf("allow_failures on a chain: %v", err)
	}
}

func TestValidateQueueName(t *testing.T) {
	for _, ok := range []string{"default", "slow-reports", "q_1", strings.Repeat("a", 64)} {
		if err := ValidateQueueName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "a*", "a>", strings.Repeat("a", 65), "ünïcode"} {
		if err := ValidateQueueName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzDecode feeds arbitrary bytes to the decoder that guards the
// coordinator's input: it must return an event or ErrInvalid, never panic.
func FuzzDecode(f *testing.F) {
	enc := Encoder{Source: "fuzz"}
	msg, _ := enc.Encode(TypeJobFailed, "s", "id", Route{BatchID: "b"}, JobFailed{BatchID: "b", JobID: "1", Role: RoleJob, Attempt: 1, Error: "x"})
	f.Add(msg.Data)
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"s","type":"batchq.jobs.added","batchid":"b","data":{"batch_id":"b","add_id":"x.0","jobs":[]}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Decode error %v does not match ErrInvalid", err)
			}
			return
		}
		if !env.Type.Known() {
			t.Fatalf("Decode returned unknown type %q", env.Type)
		}
		switch env.Type {
		case TypeJobFailed:
			_, err = DecodeData[JobFailed](env)
		case TypeJobsAdded:
			_, err = DecodeData[JobsAdded](env)
		case TypeBatchSubmitted:
			_, err = DecodeData[BatchSubmitted](env)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("DecodeData error %v does not match ErrInvalid", err)
		}
	})
}
