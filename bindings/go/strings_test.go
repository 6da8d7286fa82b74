package kiln

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// kiln.h reads message fields, stop strings, special tokens and paths as C strings, and the raw
// layer packs lists of them NUL-separated: a Go string holding a NUL must be refused before it
// reaches kiln (it would be cut short, or split a list into more entries than were given).
func TestStringsHoldingANULAreRefusedBeforeKiln(t *testing.T) {
	_, m := fixture(t)
	s := newSession(t, m)
	invalid := &Error{Status: StatusInvalidArgument}
	opts := greedy(4)
	opts.Stop = []string{"ok", "a\x00b"}
	if _, err := s.Generate(context.Background(), "In the beginning", opts, nil); !errors.Is(err, invalid) ||
		!strings.Contains(err.Error(), "Stop[1] holds a NUL byte at offset 1") {
		t.Errorf("Generate with a NUL in a stop string: %v", err)
	}
	nul := func(err error) bool { return errors.Is(err, invalid) && strings.Contains(err.Error(), "NUL byte") }
	template := &ChatOptions{TemplateOverride: "{{ messages[0].content }}"}
	content := "two\x00parts"
	if _, err := m.ChatRender([]ChatMessage{{Role: "user", Content: &content}}, template); !nul(err) {
		t.Errorf("ChatRender with a NUL in a message: %v", err)
	}
	if _, err := TrainTokenizer([]string{"corpus\x00.txt"}, TrainOptions{VocabSize: 300}); !nul(err) {
		t.Errorf("TrainTokenizer with a NUL in a path: %v", err)
	}
	// The same calls without the NUL work (the refusal is about the NUL, not the call).
	opts.Stop = []string{"ok", "ab"}
	if _, err := s.Generate(context.Background(), "In the beginning", opts, nil); err != nil {
		t.Errorf("Generate: %v", err)
	}
	content = "two parts"
	if text, err := m.ChatRender([]ChatMessage{{Role: "user", Content: &content}}, template); err != nil || text != content {
		t.Errorf("ChatRender = %q, %v; want %q", text, err, content)
	}
}
