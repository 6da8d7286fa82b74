package kiln

import (
	"context"
	"errors"
	"runtime"
	"sync"

	"kiln.dev/kiln/raw"
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
	s := raw.NewKiln_sampling_options()
	defer raw.DeleteKiln_sampling_options(s)
	raw.Kiln_sampling_options_default(s)
	return Sampling{s.GetTemperature(), int32(s.GetTop_k()), s.GetTop_p(), s.GetMin_p(),
		s.GetRepetition_penalty(), s.GetPresence_penalty(), s.GetFrequency_penalty(),
		int32(s.GetPenalty_last_n())}
}

// newC returns kiln_sampling_options holding s; the caller deletes it.
func (s Sampling) newC() raw.Kiln_sampling_options {
	c := raw.NewKiln_sampling_options()
	c.SetTemperature(s.Temperature)
	c.SetTop_k(int(s.TopK))
	c.SetTop_p(s.TopP)
	c.SetMin_p(s.MinP)
	c.SetRepetition_penalty(s.RepetitionPenalty)
	c.SetPresence_penalty(s.PresencePenalty)
	c.SetFrequency_penalty(s.FrequencyPenalty)
	c.SetPenalty_last_n(int(s.PenaltyLastN))
	return c
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
	g := raw.NewKiln_generate_options()
	defer raw.DeleteKiln_generate_options(g)
	raw.Kiln_generate_options_default(g)
	flags := g.GetTokenize_flags()
	return GenerateOptions{Sampling: DefaultSampling(), MaxTokens: int32(g.GetMax_tokens()),
		AddSpecial:   flags&uint(raw.KILN_TOKENIZE_ADD_SPECIAL) != 0,
		ParseSpecial: flags&uint(raw.KILN_TOKENIZE_PARSE_SPECIAL) != 0, IgnoreEOS: g.GetIgnore_eos() != 0}
}

// StopReason says why generation ended.
type StopReason int

var (
	StopNone        = StopReason(raw.KILN_STOP_NONE)
	StopEOS         = StopReason(raw.KILN_STOP_EOS)
	StopMaxTokens   = StopReason(raw.KILN_STOP_MAX_TOKENS)
	StopString      = StopReason(raw.KILN_STOP_STRING)
	StopCallback    = StopReason(raw.KILN_STOP_CALLBACK)
	StopContextFull = StopReason(raw.KILN_STOP_CONTEXT_FULL)
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

var (
	LogitsNone = LogitsMode(raw.KILN_LOGITS_NONE)
	LogitsLast = LogitsMode(raw.KILN_LOGITS_LAST)
	LogitsAll  = LogitsMode(raw.KILN_LOGITS_ALL)
)

// Session is a KV cache, sampler and RNG over a model. One goroutine at a time (kiln reports a
// second one with StatusBusy); Cancel is safe from any goroutine.
type Session struct {
	mu    sync.RWMutex // guards ptr against Close; kiln itself detects concurrent use
	ptr   cSession
	model *Model
}

// NewSession creates a session on the model.
func (m *Model) NewSession(opts SessionOptions) (*Session, error) {
	s := &Session{model: m}
	err := m.with(func(p cModel) error {
		o := raw.NewKiln_session_options()
		defer raw.DeleteKiln_session_options(o)
		if err := call(func() status { return raw.Kiln_session_options_default(o) }); err != nil {
			return err
		}
		o.SetContext_length(int(opts.ContextLength))
		if opts.Seed != nil {
			o.SetSeed(*opts.Seed)
		}
		var ptr uintptr
		err := call(func() status { return raw.Kiln_session_create(p, o, &ptr) })
		s.ptr = cSession(ptr)
		return err
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
	if s.ptr != 0 {
		raw.Kiln_session_free(s.ptr)
		s.ptr = 0
		s.model.rt.adopt(-1)
		runtime.SetFinalizer(s, nil)
	}
	return nil
}

func (s *Session) with(f func(p cSession) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ptr == 0 {
		return closedError("Session")
	}
	return f(s.ptr)
}

// Reset empties the KV cache and re-seeds the RNG.
func (s *Session) Reset() error {
	return s.with(func(p cSession) error {
		return call(func() status { return raw.Kiln_session_reset(p) })
	})
}

// Position is (tokens in the KV cache, its capacity).
func (s *Session) Position() (nPast, contextLength int32, err error) {
	err = s.with(func(p cSession) error {
		return call(func() status { return raw.Kiln_session_position(p, &nPast, &contextLength) })
	})
	return
}

// Cancel stops the call running on the session (or its next call); safe from any goroutine.
func (s *Session) Cancel() error {
	return s.with(func(p cSession) error {
		return call(func() status { return raw.Kiln_session_cancel(p) })
	})
}

// Forward runs ids after the cached context and returns float32 logits (vocab for LogitsLast,
// len(ids)×vocab row-major for LogitsAll, nil for LogitsNone).
func (s *Session) Forward(ids []int32, mode LogitsMode) ([]float32, error) {
	var out []float32
	err := s.with(func(p cSession) error {
		var needed uint64
		m := raw.Enum_SS_kiln_logits_mode(mode)
		return call(func() status {
			st := raw.Kiln_forward(p, ids, m, nil, &needed)
			if st != raw.KILN_ERR_BUFFER_TOO_SMALL {
				return st // ran (LogitsNone) or failed
			}
			out = make([]float32, int(needed))
			return raw.Kiln_forward(p, ids, m, out, &needed)
		})
	})
	return out, err
}

// Sample draws one id from logits (vocab floats) with the session's RNG.
func (s *Session) Sample(logits []float32, sampling Sampling) (int32, error) {
	var id int32
	err := s.with(func(p cSession) error {
		o := sampling.newC()
		defer raw.DeleteKiln_sampling_options(o)
		return call(func() status { return raw.Kiln_sample(p, logits, o, &id) })
	})
	return id, err
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

// cGenerate is the C memory one generate call lends kiln: the options and everything they point
// at (cgo forbids C memory that holds Go pointers).
type cGenerate struct {
	options  raw.Kiln_generate_options
	sampling raw.Kiln_sampling_options
	stops    raw.Kiln_go_strings
	nIDs     int
}

func newCGenerate(opts GenerateOptions) *cGenerate {
	g := &cGenerate{options: raw.NewKiln_generate_options(), sampling: opts.Sampling.newC()}
	raw.Kiln_generate_options_default(g.options)
	g.options.SetSampling(g.sampling)
	g.options.SetMax_tokens(int(opts.MaxTokens))
	g.options.SetTokenize_flags(tokenizeFlags(opts.AddSpecial, opts.ParseSpecial))
	if opts.IgnoreEOS {
		g.options.SetIgnore_eos(1)
	}
	if opts.MaxTokens > 0 {
		g.nIDs = int(opts.MaxTokens)
		raw.Kiln_go_generate_options_alloc_output_ids(g.options, int64(g.nIDs))
	}
	if len(opts.Stop) > 0 {
		g.stops = raw.Kiln_go_strings_new(opts.Stop)
		raw.Kiln_go_generate_options_set_stop_strings(g.options, g.stops)
	}
	return g
}

// takeIDs copies the first n generated ids out and frees kiln's output buffer.
func (g *cGenerate) takeIDs(n int) []int32 {
	if n > g.nIDs {
		n = g.nIDs
	}
	out := make([]int32, n)
	raw.Kiln_go_generate_options_take_output_ids(g.options, out)
	return out
}

func (g *cGenerate) free() {
	raw.Kiln_go_generate_options_take_output_ids(g.options, nil)
	if g.stops != nil {
		raw.Kiln_go_strings_free(g.stops)
	}
	raw.DeleteKiln_sampling_options(g.sampling)
	raw.DeleteKiln_generate_options(g.options)
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
	h := state.handle()
	defer h.Delete()
	if err := checkNoNUL("kiln.GenerateOptions.Stop", opts.Stop...); err != nil {
		return nil, err
	}
	g := newCGenerate(opts)
	defer g.free()
	raw.Kiln_go_generate_options_set_token_callback(g.options, uint(h))
	result := raw.NewKiln_generate_result()
	defer raw.DeleteKiln_generate_result(result)
	err := s.with(func(p cSession) error {
		if text != nil {
			return call(func() status { return raw.Kiln_generate(p, *text, g.options, result) })
		}
		return call(func() status { return raw.Kiln_generate_ids(p, ids, g.options, result) })
	})
	if state.err != nil && !errors.Is(state.err, ErrStop) {
		return nil, state.err
	}
	if err != nil {
		return nil, err
	}
	return &Generation{Text: string(state.text), IDs: g.takeIDs(result.GetN_generated()),
		StopReason: StopReason(result.GetStop_reason()), NPromptTokens: int32(result.GetN_prompt_tokens()),
		NGenerated: int32(result.GetN_generated()), PrefillSeconds: result.GetPrefill_seconds(),
		DecodeSeconds: result.GetDecode_seconds()}, nil
}
