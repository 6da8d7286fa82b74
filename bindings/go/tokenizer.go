package kiln

import (
	"runtime"
	"sync"

	"kiln.dev/kiln/raw"
)

// Tokenizer turns text into ids and back. It is immutable once loaded, so one Tokenizer may be
// used from many goroutines at once. LoadTokenizer's owns its handle (Close frees it); a model's
// (Model.Tokenizer) is borrowed: it keeps the Model reachable, Close frees nothing, and it fails
// with a "closed" error once the Model is closed.
type Tokenizer struct {
	mu    sync.RWMutex
	ptr   cTokenizer
	model *Model // nil for an owned tokenizer
}

// LoadTokenizer loads a directory holding tokenizer.json (tokenizer_config.json is read too when
// present), or a tokenizer.json file itself.
func LoadTokenizer(path string) (*Tokenizer, error) {
	var p uintptr
	if err := call(func() status { return raw.Kiln_tokenizer_load(path, &p) }); err != nil {
		return nil, err
	}
	t := &Tokenizer{ptr: cTokenizer(p)}
	runtime.SetFinalizer(t, func(t *Tokenizer) { _ = t.Close() })
	return t, nil
}

// Tokenizer is the model's own tokenizer, borrowed from it (see Tokenizer).
func (m *Model) Tokenizer() (*Tokenizer, error) {
	t := &Tokenizer{model: m}
	err := m.with(func(p cModel) error {
		var ptr uintptr
		err := call(func() status { return raw.Kiln_model_tokenizer(p, &ptr) })
		t.ptr = cTokenizer(ptr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Close frees a loaded tokenizer and detaches a borrowed one. Idempotent.
func (t *Tokenizer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ptr != 0 && t.model == nil {
		raw.Kiln_tokenizer_free(t.ptr)
		runtime.SetFinalizer(t, nil)
	}
	t.ptr = 0
	return nil
}

// Owned is true for LoadTokenizer's (freed by Close), false for a model's borrowed one.
func (t *Tokenizer) Owned() bool { return t.model == nil }

// with runs f with the handle held open: Close (of the tokenizer, or of the model a borrowed one
// belongs to) waits for it.
func (t *Tokenizer) with(f func(p cTokenizer) error) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ptr == 0 {
		return closedError("Tokenizer")
	}
	if t.model == nil {
		return f(t.ptr)
	}
	return t.model.with(func(cModel) error { return f(t.ptr) })
}

// VocabSize is the number of ids (max id + 1, added tokens included).
func (t *Tokenizer) VocabSize() (int32, error) {
	var size int32
	err := t.with(func(p cTokenizer) error {
		return call(func() status { return raw.Kiln_tokenizer_vocab_size(p, &size) })
	})
	return size, err
}

// Encode turns text into ids. addSpecial adds BOS/EOS as tokenizer_config.json says;
// parseSpecial lets special-token text become the special token (only for text you wrote).
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	flags := tokenizeFlags(addSpecial, parseSpecial)
	var out []int32
	err := t.with(func(p cTokenizer) error {
		ids, err := fill(func(buf []int32, n *uint64) status { return raw.Kiln_tokenizer_encode(p, text, flags, buf, n) })
		out = ids
		return err
	})
	return out, err
}

// DecodeBytes turns ids into the bytes they stand for.
func (t *Tokenizer) DecodeBytes(ids []int32, skipSpecial bool) ([]byte, error) {
	flags := detokenizeFlags(skipSpecial)
	var out []byte
	err := t.with(func(p cTokenizer) error {
		text, err := fill(func(buf []byte, needed *uint64) status {
			return raw.Kiln_tokenizer_decode(p, ids, flags, buf, needed)
		})
		out = text
		return err
	})
	return out, err
}

// Decode turns ids into text (invalid UTF-8 from partial tokens becomes U+FFFD).
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) (string, error) {
	b, err := t.DecodeBytes(ids, skipSpecial)
	return string(b), err
}
