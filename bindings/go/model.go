package kiln

import (
	"runtime"
	"sync"

	"kiln.dev/kiln/raw"
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
	ptr cModel
	rt  *Runtime
}

// Precision is the number format a model computes in (kiln.h, kiln_precision): PrecisionDefault
// is BF16 on CUDA and float32 on the CPU; PrecisionBF16 is CUDA only; PrecisionF32 is the CUDA
// checking mode (float32 throughout).
type Precision int

var (
	PrecisionDefault = Precision(raw.KILN_PRECISION_DEFAULT)
	PrecisionBF16    = Precision(raw.KILN_PRECISION_BF16)
	PrecisionF32     = Precision(raw.KILN_PRECISION_F32)
)

// LoadOptions are LoadModelWith's options; the zero value is the default load.
type LoadOptions struct {
	// Progress, when not nil, is called with (fraction, stage) and may return true to cancel.
	Progress func(fraction float32, stage string) bool
	// Precision: PrecisionDefault (the zero value) unless set.
	Precision Precision
}

// LoadModel loads a Hugging Face model directory. progress(fraction, stage), when not nil, may
// return true to cancel (an error with StatusCancelled); a panic in it cancels and is reported as
// the returned error.
func (r *Runtime) LoadModel(path string, progress func(fraction float32, stage string) bool) (*Model, error) {
	return r.LoadModelWith(path, LoadOptions{Progress: progress})
}

// LoadModelWith is LoadModel with every load option (the precision included).
func (r *Runtime) LoadModelWith(path string, o LoadOptions) (*Model, error) {
	progress := o.Progress
	rptr, err := r.handle()
	if err != nil {
		return nil, err
	}
	opts := raw.NewKiln_model_load_options()
	defer raw.DeleteKiln_model_load_options(opts)
	if err := call(func() status { return raw.Kiln_model_load_options_default(opts) }); err != nil {
		return nil, err
	}
	opts.SetPrecision(raw.Enum_SS_kiln_precision(o.Precision))
	var state *progressState
	if progress != nil {
		state = &progressState{fn: progress}
		h := state.handle()
		defer h.Delete()
		raw.Kiln_go_model_load_options_set_progress_callback(opts, uint(h))
	}
	var p uintptr
	err = call(func() status { return raw.Kiln_model_load(rptr, path, opts, &p) })
	if state != nil && state.err != nil {
		return nil, state.err
	}
	if err != nil {
		return nil, err
	}
	return adoptModel(&Model{rt: r, ptr: cModel(p)}), nil
}

func adoptModel(m *Model) *Model {
	m.rt.adopt(1)
	runtime.SetFinalizer(m, func(m *Model) { _ = m.Close() })
	return m
}

// Close frees the model (sessions made from it stay usable). Idempotent.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ptr != 0 {
		raw.Kiln_model_free(m.ptr)
		m.ptr = 0
		m.rt.adopt(-1)
		runtime.SetFinalizer(m, nil)
	}
	return nil
}

// with runs f with the model pointer held open (Close waits for it).
func (m *Model) with(f func(p cModel) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == 0 {
		return closedError("Model")
	}
	return f(m.ptr)
}

// Info describes the model.
func (m *Model) Info() (ModelInfo, error) {
	var out ModelInfo
	err := m.with(func(p cModel) error {
		i := raw.NewKiln_model_info()
		defer raw.DeleteKiln_model_info(i)
		if err := call(func() status { return raw.Kiln_model_get_info(p, i) }); err != nil {
			return err
		}
		out = ModelInfo{i.GetArchitecture(), int32(i.GetVocab_size()), int32(i.GetHidden_size()),
			int32(i.GetN_layers()), int32(i.GetN_heads()), int32(i.GetN_kv_heads()), int32(i.GetHead_dim()),
			int32(i.GetIntermediate_size()), int32(i.GetContext_length()), i.GetN_parameters(),
			int32(i.GetBos_token_id()), int32(i.GetEos_token_id()), i.GetAdd_bos() != 0}
		return nil
	})
	return out, err
}

// EOSIDs are every id that ends generation.
func (m *Model) EOSIDs() ([]int32, error) {
	var out []int32
	err := m.with(func(p cModel) error {
		ids, err := fill(func(buf []int32, n *uint64) status { return raw.Kiln_model_eos_ids(p, buf, n) })
		out = ids
		return err
	})
	return out, err
}

func tokenizeFlags(addSpecial, parseSpecial bool) uint {
	var flags uint
	if addSpecial {
		flags |= uint(raw.KILN_TOKENIZE_ADD_SPECIAL)
	}
	if parseSpecial {
		flags |= uint(raw.KILN_TOKENIZE_PARSE_SPECIAL)
	}
	return flags
}

func detokenizeFlags(skipSpecial bool) uint {
	if skipSpecial {
		return uint(raw.KILN_DETOKENIZE_SKIP_SPECIAL)
	}
	return 0
}

// Tokenize turns text into ids. addSpecial adds BOS/EOS as the tokenizer config says;
// parseSpecial lets special-token text become the special token (only for text you wrote).
func (m *Model) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	flags := tokenizeFlags(addSpecial, parseSpecial)
	var out []int32
	err := m.with(func(p cModel) error {
		ids, err := fill(func(buf []int32, n *uint64) status { return raw.Kiln_tokenize(p, text, flags, buf, n) })
		out = ids
		return err
	})
	return out, err
}

// DetokenizeBytes turns ids into the bytes they stand for.
func (m *Model) DetokenizeBytes(ids []int32, skipSpecial bool) ([]byte, error) {
	flags := detokenizeFlags(skipSpecial)
	var out []byte
	err := m.with(func(p cModel) error {
		text, err := fill(func(buf []byte, needed *uint64) status {
			return raw.Kiln_detokenize(p, ids, flags, buf, needed)
		})
		out = text
		return err
	})
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
	err := m.with(func(p cModel) error {
		piece, err := fill(func(buf []byte, n *uint64) status { return raw.Kiln_token_to_piece(p, int(id), buf, n) })
		out = piece
		return err
	})
	return out, err
}
