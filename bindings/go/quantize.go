package kiln

/*
#include <stdint.h>
#include <stdlib.h>
#include "kiln.h"
void kiln_go_set_quantize_progress_callback(kiln_quantize_options *options, uintptr_t handle);
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// QuantizeType is the GGUF type kiln_model_quantize writes.
type QuantizeType int32

const (
	QuantizeF16    QuantizeType = C.KILN_QUANTIZE_F16
	QuantizeQ8_0   QuantizeType = C.KILN_QUANTIZE_Q8_0
	QuantizeQ4_K_M QuantizeType = C.KILN_QUANTIZE_Q4_K_M
)

// Quantize converts a Hugging Face model directory or a GGUF file src to the GGUF file dst
// (written atomically). nThreads <= 0 uses the runtime's thread count. progress(fraction,
// stage), when not nil, may return true to cancel (an error with StatusCancelled); a panic in it
// cancels and is reported as the returned error.
func (r *Runtime) Quantize(src, dst string, typ QuantizeType, nThreads int32,
	progress func(fraction float32, stage string) bool) error {
	rptr, err := r.handle()
	if err != nil {
		return err
	}
	opts := (*C.kiln_quantize_options)(C.calloc(1, C.sizeof_kiln_quantize_options))
	defer C.free(unsafe.Pointer(opts))
	if err := call(func() C.kiln_status {
		return C.kiln_quantize_options_default(opts, C.sizeof_kiln_quantize_options)
	}); err != nil {
		return err
	}
	opts._type = C.kiln_quantize_type(typ)
	opts.n_threads = C.int32_t(nThreads)
	var state *progressState
	if progress != nil {
		state = &progressState{fn: progress}
		h := cgo.NewHandle(state)
		defer h.Delete()
		C.kiln_go_set_quantize_progress_callback(opts, C.uintptr_t(h))
	}
	csrc, cdst := C.CString(src), C.CString(dst)
	defer C.free(unsafe.Pointer(csrc))
	defer C.free(unsafe.Pointer(cdst))
	err = call(func() C.kiln_status { return C.kiln_model_quantize(rptr, csrc, cdst, opts) })
	if state != nil && state.err != nil {
		return state.err
	}
	return err
}
