package kiln

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEncodeBatchAndThreadedMatchEncode(t *testing.T) {
	ref := loadReference(t)
	tok, err := LoadTokenizer(tinyDir())
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	var texts []string
	for i := 0; i < 50; i++ {
		texts = append(texts, tokenizerPhrase, "", "Hello, world!", "<|im_start|>user\nHi<|im_end|>", "Grüße 🙂")
	}
	for _, threads := range []int{1, 2, 4} {
		got, err := tok.EncodeBatch(texts, false, true, threads)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got[0], ref.TokenIDs) {
			t.Errorf("%d threads: batch ids %v, HF's %v", threads, got[0], ref.TokenIDs)
		}
		for i, text := range texts {
			want, _ := tok.Encode(text, false, true)
			if !reflect.DeepEqual(got[i], want) && !(len(got[i]) == 0 && len(want) == 0) {
				t.Fatalf("%d threads: text %d: batch %v, Encode %v", threads, i, got[i], want)
			}
		}
	}
	long := strings.Repeat(strings.Join(texts, "\n"), 300)
	single, err := tok.Encode(long, false, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, threads := range []int{1, 2, 4} {
		if got, err := tok.EncodeThreaded(long, false, true, threads); err != nil || !reflect.DeepEqual(got, single) {
			t.Errorf("%d threads: EncodeThreaded differs from Encode (%v)", threads, err)
		}
	}
	_, err = tok.EncodeBatch([]string{"fine", "bad \xff"}, false, false, 2)
	var ke *Error
	if !errors.As(err, &ke) || ke.Status != StatusInvalidArgument || !strings.Contains(ke.Message, "texts[1]") {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if _, err := tok.EncodeBatch([]string{"a"}, false, false, -1); err == nil {
		t.Error("n_threads -1 accepted")
	}
}
