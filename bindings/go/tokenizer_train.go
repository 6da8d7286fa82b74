package kiln

import (
	"runtime"

	"kiln.dev/kiln/raw"
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

// TrainTokenizer trains a byte-level BPE tokenizer on UTF-8 text files (kiln_tokenizer_train).
// Close the result; Save writes its tokenizer.json.
func TrainTokenizer(files []string, opts TrainOptions) (*Tokenizer, error) {
	if err := checkNoNUL("files", files...); err != nil {
		return nil, err
	}
	if err := checkNoNUL("kiln.TrainOptions.SpecialTokens", opts.SpecialTokens...); err != nil {
		return nil, err
	}
	copts := raw.NewKiln_tokenizer_train_options()
	defer raw.DeleteKiln_tokenizer_train_options(copts)
	if err := call(func() status { return raw.Kiln_tokenizer_train_options_default(copts) }); err != nil {
		return nil, err
	}
	if opts.VocabSize != 0 {
		copts.SetVocab_size(int(opts.VocabSize))
	}
	if opts.MinFrequency != 0 {
		copts.SetMin_frequency(int(opts.MinFrequency))
	}
	copts.SetN_threads(int(opts.Threads))
	if opts.Pattern != "" {
		copts.SetPattern(opts.Pattern) // the options own a copy (kiln.i)
	}
	specials := raw.Kiln_go_strings_new(opts.SpecialTokens)
	defer raw.Kiln_go_strings_free(specials)
	raw.Kiln_go_tokenizer_train_options_set_special_tokens(copts, specials)
	var state *progressState
	if opts.Progress != nil {
		state = &progressState{fn: opts.Progress}
		h := state.handle()
		defer h.Delete()
		raw.Kiln_go_tokenizer_train_options_set_progress_callback(copts, uint(h))
	}
	var p uintptr
	err := call(func() status { return raw.Kiln_tokenizer_train(files, copts, &p) })
	if state != nil && state.err != nil {
		raw.Kiln_tokenizer_free(cTokenizer(p)) // NULL is fine
		return nil, state.err
	}
	if err != nil {
		return nil, err
	}
	t := &Tokenizer{ptr: cTokenizer(p)}
	runtime.SetFinalizer(t, func(t *Tokenizer) { _ = t.Close() })
	return t, nil
}

// Save writes a trained tokenizer's tokenizer.json atomically: to path when it ends in .json,
// else into the directory path (created when missing). A loaded tokenizer gives StatusUnsupported.
func (t *Tokenizer) Save(path string) error {
	return t.with(func(p cTokenizer) error {
		return call(func() status { return raw.Kiln_tokenizer_save(p, path) })
	})
}
