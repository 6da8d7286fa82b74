package kiln

/*
#include <stdint.h>
#include <stdlib.h>
#include "kiln.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// Tokenizer turns text into ids and back. It is immutable once loaded, so one Tokenizer may be
// used from many goroutines at once. LoadTokenizer's owns its handle (Close frees it); a model's
// (Model.Tokenizer) is borrowed: it keeps the Model reachable, Close frees nothing, and it fails
// with a "closed" error once the Model is closed.
type Tokenizer struct {
	mu    sync.RWMutex
	ptr   *C.kiln_tokenizer
	model *Model // nil for an owned tokenizer
}

// LoadTokenizer loads a directory holding tokenizer.json (tokenizer_config.json is read too when
// present), or a tokenizer.json file itself.
func LoadTokenizer(path string) (*Tokenizer, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	t := &Tokenizer{}
	if err := call(func() C.kiln_status { return C.kiln_tokenizer_load(cpath, &t.ptr) }); err != nil {
		return nil, err
	}
	runtime.SetFinalizer(t, func(t *Tokenizer) { _ = t.Close() })
	return t, nil
}

// Tokenizer is the model's own tokenizer, borrowed from it (see Tokenizer).
func (m *Model) Tokenizer() (*Tokenizer, error) {
	t := &Tokenizer{model: m}
	err := m.with(func(p *C.kiln_model) error {
		return call(func() C.kiln_status { return C.kiln_model_tokenizer(p, &t.ptr) })
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
	if t.ptr != nil && t.model == nil {
		C.kiln_tokenizer_free(t.ptr)
		runtime.SetFinalizer(t, nil)
	}
	t.ptr = nil
	return nil
}

// Owned is true for LoadTokenizer's (freed by Close), false for a model's borrowed one.
func (t *Tokenizer) Owned() bool { return t.model == nil }

// with runs f with the handle held open: Close (of the tokenizer, or of the model a borrowed one
// belongs to) waits for it.
func (t *Tokenizer) with(f func(p *C.kiln_tokenizer) error) error {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.ptr == nil {
		return closedError("Tokenizer")
	}
	if t.model == nil {
		return f(t.ptr)
	}
	return t.model.with(func(*C.kiln_model) error { return f(t.ptr) })
}

// VocabSize is the number of ids (max id + 1, added tokens included).
func (t *Tokenizer) VocabSize() (int32, error) {
	var size C.int32_t
	err := t.with(func(p *C.kiln_tokenizer) error {
		return call(func() C.kiln_status { return C.kiln_tokenizer_vocab_size(p, &size) })
	})
	return int32(size), err
}

// Encode turns text into ids. addSpecial adds BOS/EOS as tokenizer_config.json says;
// parseSpecial lets special-token text become the special token (only for text you wrote).
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	var flags C.uint32_t
	if addSpecial {
		flags |= C.KILN_TOKENIZE_ADD_SPECIAL
	}
	if parseSpecial {
		flags |= C.KILN_TOKENIZE_PARSE_SPECIAL
	}
	ctext := C.CBytes([]byte(text))
	defer C.free(ctext)
	var out []int32
	err := t.with(func(p *C.kiln_tokenizer) error {
		ids, err := fill(func(buf *C.int32_t, capacity C.size_t, n *C.size_t) C.kiln_status {
			return C.kiln_tokenizer_encode(p, (*C.char)(ctext), C.size_t(len(text)), flags, buf, capacity, n)
		})
		out = int32s(ids)
		return err
	})
	return out, err
}

// DecodeBytes turns ids into the bytes they stand for.
func (t *Tokenizer) DecodeBytes(ids []int32, skipSpecial bool) ([]byte, error) {
	var flags C.uint32_t
	if skipSpecial {
		flags = C.KILN_DETOKENIZE_SKIP_SPECIAL
	}
	var out []byte
	err := t.with(func(p *C.kiln_tokenizer) error {
		ptr, n := cIDs(ids)
		text, err := fill(func(buf *C.char, capacity C.size_t, needed *C.size_t) C.kiln_status {
			return C.kiln_tokenizer_decode(p, ptr, n, flags, buf, capacity, needed)
		})
		out = bytesOf(text)
		return err
	})
	runtime.KeepAlive(ids)
	return out, err
}

// Decode turns ids into text (invalid UTF-8 from partial tokens becomes U+FFFD).
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) (string, error) {
	b, err := t.DecodeBytes(ids, skipSpecial)
	return string(b), err
}
