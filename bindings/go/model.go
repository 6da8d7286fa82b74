package kiln

/*
#include <stdint.h>
#include <stdlib.h>
#include "kiln.h"
void kiln_go_set_progress_callback(kiln_model_load_options *options, uintptr_t handle);
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// ModelInfo describes a model.
type ModelInfo struct {
	Architecture     string
	VocabSize        int32
	HiddenSize       int32
	NLayers          int32
	NHeads           int32
	NKVHeads         int32
	HeadDim          int32
	IntermediateSize int32
	ContextLength    int32
	NParameters      int64
	BOSTokenID       int32 // -1 when none
	EOSTokenID       int32 // -1 when none
	AddBOS           bool
}

// Model is a loaded model: immutable, safe for many goroutines.
type Model struct {
	mu  sync.RWMutex
	ptr *C.kiln_model
	rt  *Runtime
}

// LoadModel loads a Hugging Face model directory. progress(fraction, stage), when not nil, may
// return true to cancel (an error with StatusCancelled); a panic in it cancels and is reported as
// the returned error.
func (r *Runtime) LoadModel(path string, progress func(fraction float32, stage string) bool) (*Model, error) {
	rptr, err := r.handle()
	if err != nil {
		return nil, err
	}
	opts := (*C.kiln_model_load_options)(C.calloc(1, C.sizeof_kiln_model_load_options))
	defer C.free(unsafe.Pointer(opts))
	if err := call(func() C.kiln_status {
		return C.kiln_model_load_options_default(opts, C.sizeof_kiln_model_load_options)
	}); err != nil {
		return nil, err
	}
	var state *progressState
	if progress != nil {
		state = &progressState{fn: progress}
		h := cgo.NewHandle(state)
		defer h.Delete()
		C.kiln_go_set_progress_callback(opts, C.uintptr_t(h))
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	m := &Model{rt: r}
	err = call(func() C.kiln_status { return C.kiln_model_load(rptr, cpath, opts, &m.ptr) })
	if state != nil && state.err != nil {
		return nil, state.err
	}
	if err != nil {
		return nil, err
	}
	r.adopt(1)
	runtime.SetFinalizer(m, func(m *Model) { _ = m.Close() })
	return m, nil
}

// Close frees the model (sessions made from it stay usable). Idempotent.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ptr != nil {
		C.kiln_model_free(m.ptr)
		m.ptr = nil
		m.rt.adopt(-1)
		runtime.SetFinalizer(m, nil)
	}
	return nil
}

// with runs f with the model pointer held open (Close waits for it).
func (m *Model) with(f func(p *C.kiln_model) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return closedError("Model")
	}
	return f(m.ptr)
}

// Info describes the model.
func (m *Model) Info() (ModelInfo, error) {
	var out ModelInfo
	err := m.with(func(p *C.kiln_model) error {
		var i C.kiln_model_info
		i.struct_size = C.sizeof_kiln_model_info
		if err := call(func() C.kiln_status { return C.kiln_model_get_info(p, &i) }); err != nil {
			return err
		}
		out = ModelInfo{C.GoString(i.architecture), int32(i.vocab_size), int32(i.hidden_size),
			int32(i.n_layers), int32(i.n_heads), int32(i.n_kv_heads), int32(i.head_dim),
			int32(i.intermediate_size), int32(i.context_length), int64(i.n_parameters),
			int32(i.bos_token_id), int32(i.eos_token_id), i.add_bos != 0}
		return nil
	})
	return out, err
}

func int32s(ids []C.int32_t) []int32 {
	out := make([]int32, len(ids))
	for i, id := range ids {
		out[i] = int32(id)
	}
	return out
}

// EOSIDs are every id that ends generation.
func (m *Model) EOSIDs() ([]int32, error) {
	var out []int32
	err := m.with(func(p *C.kiln_model) error {
		ids, err := fill(func(buf *C.int32_t, capacity C.size_t, n *C.size_t) C.kiln_status {
			return C.kiln_model_eos_ids(p, buf, capacity, n)
		})
		out = int32s(ids)
		return err
	})
	return out, err
}

// Tokenize turns text into ids. addSpecial adds BOS/EOS as the tokenizer config says;
// parseSpecial lets special-token text become the special token (only for text you wrote).
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
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
	err := m.with(func(p *C.kiln_model) error {
		ids, err := fill(func(buf *C.int32_t, capacity C.size_t, n *C.size_t) C.kiln_status {
			return C.kiln_tokenize(p, (*C.char)(ctext), C.size_t(len(text)), flags, buf, capacity, n)
		})
		out = int32s(ids)
		return err
	})
	return out, err
}

func bytesOf(chars []C.char) []byte {
	out := make([]byte, len(chars))
	for i, c := range chars {
		out[i] = byte(c)
	}
	return out
}

func cIDs(ids []int32) (*C.int32_t, C.size_t) {
	if len(ids) == 0 {
		return nil, 0
	}
	return (*C.int32_t)(unsafe.Pointer(&ids[0])), C.size_t(len(ids))
}

// DetokenizeBytes turns ids into the bytes they stand for.
func (m *Model) DetokenizeBytes(ids []int32, skipSpecial bool) ([]byte, error) {
	var flags C.uint32_t
	if skipSpecial {
		flags = C.KILN_DETOKENIZE_SKIP_SPECIAL
	}
	var out []byte
	err := m.with(func(p *C.kiln_model) error {
		ptr, n := cIDs(ids)
		text, err := fill(func(buf *C.char, capacity C.size_t, needed *C.size_t) C.kiln_status {
			return C.kiln_detokenize(p, ptr, n, flags, buf, capacity, needed)
		})
		out = bytesOf(text)
		return err
	})
	runtime.KeepAlive(ids)
	return out, err
}

// Detokenize turns ids into text.
func (m *Model) Detokenize(ids []int32, skipSpecial bool) (string, error) {
	b, err := m.DetokenizeBytes(ids, skipSpecial)
	return string(b), err
}

// TokenToPiece is the raw bytes of one token (may be part of a UTF-8 character).
func (m *Model) TokenToPiece(id int32) ([]byte, error) {
	var out []byte
	err := m.with(func(p *C.kiln_model) error {
		piece, err := fill(func(buf *C.char, capacity C.size_t, n *C.size_t) C.kiln_status {
			return C.kiln_token_to_piece(p, C.int32_t(id), buf, capacity, n)
		})
		out = bytesOf(piece)
		return err
	})
	return out, err
}
