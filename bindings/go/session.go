package kiln

/*
#include <stdint.h>
#include <stdlib.h>
#include "kiln.h"
void kiln_go_set_token_callback(kiln_generate_options *options, uintptr_t handle);
*/
import "C"

import (
	"context"
	"errors"
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// ErrStop, returned by a Generate callback, ends generation without an error (StopCallback).
var ErrStop = errors.New("kiln: stop generation")

// SessionOptions configures NewSession; zero fields take kiln's defaults.
type SessionOptions struct {
	ContextLength int32   // tokens the KV cache holds; 0 = the model's (capped at 4096)
	Seed          *uint64 // RNG seed; nil = kiln's default
}

// Sampling configures token sampling; DefaultSampling() is kiln's defaults.
type Sampling struct {
	Temperature       float32 // 0 = greedy
	TopK              int32
	TopP              float32
	MinP              float32
	RepetitionPenalty float32
	PresencePenalty   float32
	FrequencyPenalty  float32
	PenaltyLastN      int32
}

// DefaultSampling is kiln_sampling_options_default.
func DefaultSampling() Sampling {
	var s C.kiln_sampling_options
	C.kiln_sampling_options_default(&s, C.sizeof_kiln_sampling_options)
	return Sampling{float32(s.temperature), int32(s.top_k), float32(s.top_p), float32(s.min_p),
		float32(s.repetition_penalty), float32(s.presence_penalty), float32(s.frequency_penalty),
		int32(s.penalty_last_n)}
}

func (s Sampling) fillC(c *C.kiln_sampling_options) {
	c.struct_size = C.sizeof_kiln_sampling_options
	c.temperature = C.float(s.Temperature)
	c.top_k = C.int32_t(s.TopK)
	c.top_p = C.float(s.TopP)
	c.min_p = C.float(s.MinP)
	c.repetition_penalty = C.float(s.RepetitionPenalty)
	c.presence_penalty = C.float(s.PresencePenalty)
	c.frequency_penalty = C.float(s.FrequencyPenalty)
	c.penalty_last_n = C.int32_t(s.PenaltyLastN)
}

// GenerateOptions configures Generate; DefaultGenerateOptions() is kiln's defaults.
type GenerateOptions struct {
	Sampling     Sampling
	MaxTokens    int32
	AddSpecial   bool // for a text prompt: add BOS/EOS as the tokenizer config says
	ParseSpecial bool
	IgnoreEOS    bool
	Stop         []string
}

// DefaultGenerateOptions is kiln_generate_options_default.
func DefaultGenerateOptions() GenerateOptions {
	var g C.kiln_generate_options
	C.kiln_generate_options_default(&g, C.sizeof_kiln_generate_options)
	return GenerateOptions{Sampling: DefaultSampling(), MaxTokens: int32(g.max_tokens),
		AddSpecial:   g.tokenize_flags&C.KILN_TOKENIZE_ADD_SPECIAL != 0,
		ParseSpecial: g.tokenize_flags&C.KILN_TOKENIZE_PARSE_SPECIAL != 0, IgnoreEOS: g.ignore_eos != 0}
}

// StopReason says why generation ended.
type StopReason int

const (
	StopNone        StopReason = StopReason(C.KILN_STOP_NONE)
	StopEOS         StopReason = StopReason(C.KILN_STOP_EOS)
	StopMaxTokens   StopReason = StopReason(C.KILN_STOP_MAX_TOKENS)
	StopString      StopReason = StopReason(C.KILN_STOP_STRING)
	StopCallback    StopReason = StopReason(C.KILN_STOP_CALLBACK)
	StopContextFull StopReason = StopReason(C.KILN_STOP_CONTEXT_FULL)
)

// Generation is what Generate produced.
type Generation struct {
	Text           string  // the concatenated pieces
	IDs            []int32 // generated ids (including a final EOS)
	StopReason     StopReason
	NPromptTokens  int32
	NGenerated     int32
	PrefillSeconds float64
	DecodeSeconds  float64
}

// LogitsMode selects which logits Forward returns.
type LogitsMode int

const (
	LogitsNone LogitsMode = LogitsMode(C.KILN_LOGITS_NONE)
	LogitsLast LogitsMode = LogitsMode(C.KILN_LOGITS_LAST)
	LogitsAll  LogitsMode = LogitsMode(C.KILN_LOGITS_ALL)
)

// Session is a KV cache, sampler and RNG over a model. One goroutine at a time (kiln reports a
// second one with StatusBusy); Cancel is safe from any goroutine.
type Session struct {
	mu    sync.RWMutex // guards ptr against Close; kiln itself detects concurrent use
	ptr   *C.kiln_session
	model *Model
}

// NewSession creates a session on the model.
func (m *Model) NewSession(opts SessionOptions) (*Session, error) {
	s := &Session{model: m}
	err := m.with(func(p *C.kiln_model) error {
		var o C.kiln_session_options
		if err := call(func() C.kiln_status {
			return C.kiln_session_options_default(&o, C.sizeof_kiln_session_options)
		}); err != nil {
			return err
		}
		o.context_length = C.int32_t(opts.ContextLength)
		if opts.Seed != nil {
			o.seed = C.uint64_t(*opts.Seed)
		}
		return call(func() C.kiln_status { return C.kiln_session_create(p, &o, &s.ptr) })
	})
	if err != nil {
		return nil, err
	}
	m.rt.adopt(1)
	runtime.SetFinalizer(s, func(s *Session) { _ = s.Close() })
	return s, nil
}

// Close frees the session. Idempotent.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr != nil {
		C.kiln_session_free(s.ptr)
		s.ptr = nil
		s.model.rt.adopt(-1)
		runtime.SetFinalizer(s, nil)
	}
	return nil
}

func (s *Session) with(f func(p *C.kiln_session) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ptr == nil {
		return closedError("Session")
	}
	return f(s.ptr)
}

// Reset empties the KV cache and re-seeds the RNG.
func (s *Session) Reset() error {
	return s.with(func(p *C.kiln_session) error {
		return call(func() C.kiln_status { return C.kiln_session_reset(p) })
	})
}

// Position is (tokens in the KV cache, its capacity).
func (s *Session) Position() (nPast, contextLength int32, err error) {
	err = s.with(func(p *C.kiln_session) error {
		var a, b C.int32_t
		e := call(func() C.kiln_status { return C.kiln_session_position(p, &a, &b) })
		nPast, contextLength = int32(a), int32(b)
		return e
	})
	return
}

// Cancel stops the call running on the session (or its next call); safe from any goroutine.
func (s *Session) Cancel() error {
	return s.with(func(p *C.kiln_session) error {
		return call(func() C.kiln_status { return C.kiln_session_cancel(p) })
	})
}

// Forward runs ids after the cached context and returns float32 logits (vocab for LogitsLast,
// len(ids)×vocab row-major for LogitsAll, nil for LogitsNone).
func (s *Session) Forward(ids []int32, mode LogitsMode) ([]float32, error) {
	var out []float32
	err := s.with(func(p *C.kiln_session) error {
		ptr, n := cIDs(ids)
		var needed C.size_t
		return call(func() C.kiln_status {
			status := C.kiln_forward(p, ptr, n, C.kiln_logits_mode(mode), nil, 0, &needed)
			if status != C.KILN_ERR_BUFFER_TOO_SMALL {
				return status // ran (LogitsNone) or failed
			}
			out = make([]float32, int(needed))
			return C.kiln_forward(p, ptr, n, C.kiln_logits_mode(mode), (*C.float)(unsafe.Pointer(&out[0])), needed, &needed)
		})
	})
	runtime.KeepAlive(ids)
	return out, err
}

// Sample draws one id from logits (vocab floats) with the session's RNG.
func (s *Session) Sample(logits []float32, sampling Sampling) (int32, error) {
	var id C.int32_t
	err := s.with(func(p *C.kiln_session) error {
		var o C.kiln_sampling_options
		sampling.fillC(&o)
		var ptr *C.float
		if len(logits) > 0 {
			ptr = (*C.float)(unsafe.Pointer(&logits[0]))
		}
		return call(func() C.kiln_status { return C.kiln_sample(p, ptr, C.size_t(len(logits)), &o, &id) })
	})
	return int32(id), err
}

// Generate appends prompt to the context and generates, calling onPiece (may be nil) for every
// piece of text. onPiece returning ErrStop ends generation (StopCallback); any other error or a
// panic ends it and is returned. Cancelling ctx ends generation at the next token and returns
// ctx.Err().
func (s *Session) Generate(ctx context.Context, prompt string, opts GenerateOptions,
	onPiece func(piece string, tokenID int32) error) (*Generation, error) {
	return s.generate(ctx, &prompt, nil, opts, onPiece)
}

// GenerateIDs is Generate with a tokenized prompt (may be empty when the cache holds context).
func (s *Session) GenerateIDs(ctx context.Context, prompt []int32, opts GenerateOptions,
	onPiece func(piece string, tokenID int32) error) (*Generation, error) {
	return s.generate(ctx, nil, prompt, opts, onPiece)
}

// cGenerate is the C memory one generate call lends kiln: options and everything they point at
// live outside the Go heap (cgo forbids passing Go memory that holds Go pointers).
type cGenerate struct {
	options  *C.kiln_generate_options
	sampling *C.kiln_sampling_options
	ids      *C.int32_t
	nIDs     int
	stops    []*C.char
	stopArr  **C.char
}

func newCGenerate(opts GenerateOptions) *cGenerate {
	g := &cGenerate{
		options:  (*C.kiln_generate_options)(C.calloc(1, C.sizeof_kiln_generate_options)),
		sampling: (*C.kiln_sampling_options)(C.calloc(1, C.sizeof_kiln_sampling_options)),
	}
	C.kiln_generate_options_default(g.options, C.sizeof_kiln_generate_options)
	opts.Sampling.fillC(g.sampling)
	g.options.sampling = g.sampling
	g.options.max_tokens = C.int32_t(opts.MaxTokens)
	var flags C.uint32_t
	if opts.AddSpecial {
		flags |= C.KILN_TOKENIZE_ADD_SPECIAL
	}
	if opts.ParseSpecial {
		flags |= C.KILN_TOKENIZE_PARSE_SPECIAL
	}
	g.options.tokenize_flags = flags
	if opts.IgnoreEOS {
		g.options.ignore_eos = 1
	}
	if opts.MaxTokens > 0 {
		g.nIDs = int(opts.MaxTokens)
		g.ids = (*C.int32_t)(C.calloc(C.size_t(g.nIDs), 4))
		g.options.output_ids = g.ids
		g.options.output_ids_capacity = C.size_t(g.nIDs)
	}
	if len(opts.Stop) > 0 {
		g.stopArr = (**C.char)(C.calloc(C.size_t(len(opts.Stop)), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
		arr := unsafe.Slice(g.stopArr, len(opts.Stop))
		for i, stop := range opts.Stop {
			arr[i] = C.CString(stop)
			g.stops = append(g.stops, arr[i])
		}
		g.options.stop_strings = g.stopArr
		g.options.n_stop_strings = C.size_t(len(opts.Stop))
	}
	return g
}

func (g *cGenerate) free() {
	for _, s := range g.stops {
		C.free(unsafe.Pointer(s))
	}
	C.free(unsafe.Pointer(g.stopArr))
	C.free(unsafe.Pointer(g.ids))
	C.free(unsafe.Pointer(g.sampling))
	C.free(unsafe.Pointer(g.options))
}

func (s *Session) generate(ctx context.Context, text *string, ids []int32, opts GenerateOptions,
	onPiece func(string, int32) error) (*Generation, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	state := &tokenState{onPiece: func(piece string, id int32) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if onPiece == nil {
			return nil
		}
		return onPiece(piece, id)
	}}
	h := cgo.NewHandle(state)
	defer h.Delete()
	g := newCGenerate(opts)
	defer g.free()
	C.kiln_go_set_token_callback(g.options, C.uintptr_t(h))
	var result C.kiln_generate_result
	result.struct_size = C.sizeof_kiln_generate_result
	err := s.with(func(p *C.kiln_session) error {
		if text != nil {
			ctext := C.CBytes([]byte(*text))
			defer C.free(ctext)
			return call(func() C.kiln_status {
				return C.kiln_generate(p, (*C.char)(ctext), C.size_t(len(*text)), g.options, &result)
			})
		}
		ptr, n := cIDs(ids)
		return call(func() C.kiln_status { return C.kiln_generate_ids(p, ptr, n, g.options, &result) })
	})
	runtime.KeepAlive(ids)
	if state.err != nil && !errors.Is(state.err, ErrStop) {
		return nil, state.err
	}
	if err != nil {
		return nil, err
	}
	n := int(result.n_generated)
	if n > g.nIDs {
		n = g.nIDs
	}
	out := make([]int32, n)
	if n > 0 {
		copy(out, int32s(unsafe.Slice((*C.int32_t)(g.ids), n)))
	}
	return &Generation{Text: string(state.text), IDs: out, StopReason: StopReason(result.stop_reason),
		NPromptTokens: int32(result.n_prompt_tokens), NGenerated: int32(result.n_generated),
		PrefillSeconds: float64(result.prefill_seconds), DecodeSeconds: float64(result.decode_seconds)}, nil
}
