package kiln

import "kiln.dev/kiln/raw"

// QuantizeType is the GGUF type kiln_model_quantize writes.
type QuantizeType int32

var (
	QuantizeF16    = QuantizeType(raw.KILN_QUANTIZE_F16)
	QuantizeQ8_0   = QuantizeType(raw.KILN_QUANTIZE_Q8_0)
	QuantizeQ4_K_M = QuantizeType(raw.KILN_QUANTIZE_Q4_K_M)
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
	opts := raw.NewKiln_quantize_options()
	defer raw.DeleteKiln_quantize_options(opts)
	if err := call(func() status { return raw.Kiln_quantize_options_default(opts) }); err != nil {
		return err
	}
	opts.SetQuantize_type(raw.Enum_SS_kiln_quantize_type(typ))
	opts.SetN_threads(int(nThreads))
	var state *progressState
	if progress != nil {
		state = &progressState{fn: progress}
		h := state.handle()
		defer h.Delete()
		raw.Kiln_go_quantize_options_set_progress_callback(opts, uint(h))
	}
	err = call(func() status { return raw.Kiln_model_quantize(rptr, src, dst, opts) })
	if state != nil && state.err != nil {
		return state.err
	}
	return err
}
