package kiln

/*
#include <stdint.h>
#include <stdlib.h>
#include "kiln.h"
void kiln_go_set_train_progress_callback(kiln_tokenizer_train_options *options, uintptr_t handle);
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// TrainOptions configures TrainTokenizer; the zero value of a field means kiln's default.
type TrainOptions struct {
	VocabSize     int32    // 256 byte tokens + merges + special tokens; 0 = 32768
	SpecialTokens []string // get the last ids, in this order; their text is not counted
	Pattern       string   // pre-tokenizer regex; "" = Llama 3's (KILN_TOKENIZER_DEFAULT_PATTERN)
	Threads       int32    // counting threads; 0 = all cores
	MinFrequency  int32    // pairs seen fewer times are not merged; 0 = 2
	// Progress, when not nil, may return true to cancel (an error with StatusCancelled); a panic
	// in it cancels and is returned as the error. Called on the calling goroutine's thread.
	Progress func(fraction float32, stage string) bool
}

// cStrings is a C array of C strings, freed by free().
type cStrings struct {
	arr   **C.char
	items []*C.char
}

func newCStrings(values []string) *cStrings {
	s := &cStrings{}
	if len(values) == 0 {
		return s
	}
	s.arr = (**C.char)(C.calloc(C.size_t(len(values)), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	slots := unsafe.Slice(s.arr, len(values))
	for i, v := range values {
		slots[i] = C.CString(v)
		s.items = append(s.items, slots[i])
	}
	return s
}

func (s *cStrings) free() {
	for _, p := range s.items {
		C.free(unsafe.Pointer(p))
	}
	C.free(unsafe.Pointer(s.arr))
}

// TrainTokenizer trains a byte-level BPE tokenizer on UTF-8 text files (kiln_tokenizer_train).
// Close the result; Save writes its tokenizer.json.
func TrainTokenizer(files []string, opts TrainOptions) (*Tokenizer, error) {
	copts := (*C.kiln_tokenizer_train_options)(C.calloc(1, C.sizeof_kiln_tokenizer_train_options))
	defer C.free(unsafe.Pointer(copts))
	if err := call(func() C.kiln_status {
		return C.kiln_tokenizer_train_options_default(copts, C.sizeof_kiln_tokenizer_train_options)
	}); err != nil {
		return nil, err
	}
	if opts.VocabSize != 0 {
		copts.vocab_size = C.int32_t(opts.VocabSize)
	}
	if opts.MinFrequency != 0 {
		copts.min_frequency = C.int32_t(opts.MinFrequency)
	}
	copts.n_threads = C.int32_t(opts.Threads)
	if opts.Pattern != "" {
		cpattern := C.CString(opts.Pattern)
		defer C.free(unsafe.Pointer(cpattern))
		copts.pattern = cpattern
	}
	specials := newCStrings(opts.SpecialTokens)
	defer specials.free()
	copts.special_tokens = specials.arr
	copts.n_special_tokens = C.size_t(len(opts.SpecialTokens))
	var state *progressState
	if opts.Progress != nil {
		state = &progressState{fn: opts.Progress}
		h := cgo.NewHandle(state)
		defer h.Delete()
		C.kiln_go_set_train_progress_callback(copts, C.uintptr_t(h))
	}
	paths := newCStrings(files)
	defer paths.free()
	t := &Tokenizer{}
	err := call(func() C.kiln_status {
		return C.kiln_tokenizer_train(paths.arr, C.size_t(len(files)), copts, &t.ptr)
	})
	if state != nil && state.err != nil {
		if t.ptr != nil {
			C.kiln_tokenizer_free(t.ptr)
		}
		return nil, state.err
	}
	if err != nil {
		return nil, err
	}
	runtime.SetFinalizer(t, func(t *Tokenizer) { _ = t.Close() })
	return t, nil
}

// Save writes a trained tokenizer's tokenizer.json atomically: to path when it ends in .json,
// else into the directory path (created when missing). A loaded tokenizer gives StatusUnsupported.
func (t *Tokenizer) Save(path string) error {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	return t.with(func(p *C.kiln_tokenizer) error {
		return call(func() C.kiln_status { return C.kiln_tokenizer_save(p, cpath) })
	})
}
