package batchq

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/batchq/batchq/events"
)

func TestEncodeJSONRejectsInvalidUTF8(t *testing.T) {
	cases := []struct {
		name  string
		value any
		ok    bool
		want  string
	}{
		{"invalid byte in a string", map[string]string{"name": "caf\xe9"}, false, ""},
		{"invalid byte in a key", map[string]int{"\xff": 1}, false, ""},
		{"real replacement character", "a\uFFFDb", true, "\"a\uFFFDb\""},
		{"escaped backslash before ufffd text", `x\ufffd`, true, `"x\\ufffd"`},
		{"nul byte", "a\x00b", true, `"a\u0000b"`},
		{"emoji and right-to-left", "😀 שלום", true, `"😀 שלום"`},
		{"bytes become base64", []byte{0xff, 0x00}, true, `"/wA="`},
		{"raw message with invalid utf-8", json.RawMessage("\"\xff\""), false, ""},
		{"raw message compacted", json.RawMessage(`{ "a" : 1 }`), true, `{"a":1}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := encodeJSON(tc.value)
			if tc.ok != (err == nil) {
				t.Fatalf("encodeJSON error = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && string(got) != tc.want {
				t.Errorf("encodeJSON = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSpecNamesJobOnBadArgs(t *testing.T) {
	_, err := Job{Name: "import", Args: map[string]string{"row": "\xc3\x28"}}.Spec(4)
	var se *SpecError
	if !errors.As(err, &se) {
		t.Fatalf("Spec error = %v, want *SpecError", err)
	}
	if se.Field != "job 4 (import) args" || !strings.Contains(se.Problem, "UTF-8") {
		t.Errorf("SpecError = %+v", se)
	}
}

func TestSplitChunksKeepsOrderAndBounds(t *testing.T) {
	var specs []events.JobSpec
	for i := range 100 {
		s, err := Job{Name: "j", Args: strings.Repeat("x", 1000)}.Spec(i)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, s)
	}
	big, _ := Job{Name: "big", Args: strings.Repeat("y", 20000)}.Spec(100)
	specs = append(specs, big)

	chunks := splitChunks(specs, 10000)
	next := 0
	for i, c := range chunks {
		if len(c) == 0 {
			t.Fatalf("chunk %d is empty", i)
		}
		size := 0
		for _, s := range c {
			if s.Position != next {
				t.Fatalf("chunk %d holds position %d where %d was expected", i, s.Position, next)
			}
			next++
			size += len(s.Args)
		}
		if len(c) > 1 && size > 10000 {
			t.Errorf("chunk %d of %d jobs holds %d bytes of args, above the limit", i, len(c), size)
		}
	}
	if next != len(specs) {
		t.Errorf("chunks hold %d jobs, want %d", next, len(specs))
	}
	if last := chunks[len(chunks)-1]; len(last) != 1 || last[0].Name != "big" {
		t.Errorf("a job larger than the limit must get a chunk of its own")
	}
}
