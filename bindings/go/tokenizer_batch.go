package kiln

import "kiln.dev/kiln/raw"

// EncodeBatch turns many texts into ids on up to nThreads threads (0: one per core), each exactly
// as Encode would (HF tokenizers' encode_batch). The raw layer packs the texts into one byte slice
// with their lengths (cgo forbids handing C an array of Go pointers); the texts may hold any byte.
func (t *Tokenizer) EncodeBatch(texts []string, addSpecial, parseSpecial bool, nThreads int) ([][]int32, error) {
	flags := tokenizeFlags(addSpecial, parseSpecial)
	total := 0
	for _, s := range texts {
		total += len(s)
	}
	offsets := make([]uint64, len(texts)+1)
	var out [][]int32
	err := t.with(func(p cTokenizer) error {
		// An id covers at least one byte: for byte-level BPE this is enough, so usually one call.
		ids := make([]int32, total+4*len(texts)+16)
		var needed uint64
		err := call(func() status {
			s := raw.Kiln_tokenizer_encode_batch(p, texts, flags, nThreads, ids, offsets, &needed)
			if s != raw.KILN_ERR_BUFFER_TOO_SMALL {
				return s
			}
			// kiln filled offsets and needed: one retry with room for them suffices.
			ids = make([]int32, int(needed)+1)
			return raw.Kiln_tokenizer_encode_batch(p, texts, flags, nThreads, ids, offsets, &needed)
		})
		if err != nil {
			return err
		}
		out = make([][]int32, len(texts))
		for i := range out {
			out[i] = append([]int32{}, ids[offsets[i]:offsets[i+1]]...)
		}
		return nil
	})
	return out, err
}

// EncodeThreaded turns one long text into ids on up to nThreads threads (0: one per core); the
// ids are exactly Encode's (kiln cuts the text only where the pieces cannot influence each other).
func (t *Tokenizer) EncodeThreaded(text string, addSpecial, parseSpecial bool, nThreads int) ([]int32, error) {
	flags := tokenizeFlags(addSpecial, parseSpecial)
	var out []int32
	err := t.with(func(p cTokenizer) error {
		ids, err := fill(func(buf []int32, n *uint64) status {
			return raw.Kiln_tokenizer_encode_threaded(p, text, flags, nThreads, buf, n)
		})
		out = ids
		return err
	})
	return out, err
}
