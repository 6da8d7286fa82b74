package kiln

/*
#include <stdint.h>
#include <stdlib.h>
#include "kiln.h"
*/
import "C"

import (
	"unsafe"
)

func encodeFlags(addSpecial, parseSpecial bool) C.uint32_t {
	var flags C.uint32_t
	if addSpecial {
		flags |= C.KILN_TOKENIZE_ADD_SPECIAL
	}
	if parseSpecial {
		flags |= C.KILN_TOKENIZE_PARSE_SPECIAL
	}
	return flags
}

// EncodeBatch turns many texts into ids on up to nThreads threads (0: one per core), each exactly
// as Encode would (HF tokenizers' encode_batch). The texts are copied into C memory for the call:
// cgo forbids handing C an array of Go pointers.
func (t *Tokenizer) EncodeBatch(texts []string, addSpecial, parseSpecial bool, nThreads int) ([][]int32, error) {
	n := len(texts)
	total := 0
	for _, s := range texts {
		total += len(s)
	}
	// One block: the text bytes, then the pointer, length and offset arrays.
	block := C.malloc(C.size_t(total + 1))
	ptrsMem := C.calloc(C.size_t(n+1), C.size_t(unsafe.Sizeof(uintptr(0))))
	lensMem := C.calloc(C.size_t(n+1), C.size_t(unsafe.Sizeof(C.size_t(0))))
	offsetsMem := C.calloc(C.size_t(n+1), C.size_t(unsafe.Sizeof(C.size_t(0))))
	defer C.free(block)
	defer C.free(ptrsMem)
	defer C.free(lensMem)
	defer C.free(offsetsMem)
	ptrs := unsafe.Slice((**C.char)(ptrsMem), n+1)
	lens := unsafe.Slice((*C.size_t)(lensMem), n+1)
	offsets := unsafe.Slice((*C.size_t)(offsetsMem), n+1)
	bytes := unsafe.Slice((*byte)(block), total+1)
	pos := 0
	for i, s := range texts {
		copy(bytes[pos:], s)
		ptrs[i] = (*C.char)(unsafe.Add(block, pos))
		lens[i] = C.size_t(len(s))
		pos += len(s)
	}
	flags := encodeFlags(addSpecial, parseSpecial)
	var out [][]int32
	err := t.with(func(p *C.kiln_tokenizer) error {
		// An id covers at least one byte: for byte-level BPE this is enough, so usually one call.
		ids := make([]int32, total+4*n+16)
		var needed C.size_t
		err := call(func() C.kiln_status {
			status := C.kiln_tokenizer_encode_batch(p, &ptrs[0], &lens[0], C.size_t(n), flags, C.int32_t(nThreads),
				(*C.int32_t)(unsafe.Pointer(&ids[0])), C.size_t(len(ids)), &offsets[0], &needed)
			if status != C.KILN_ERR_BUFFER_TOO_SMALL {
				return status
			}
			ids = make([]int32, int(needed)+1)
			return C.kiln_tokenizer_encode_batch(p, &ptrs[0], &lens[0], C.size_t(n), flags, C.int32_t(nThreads),
				(*C.int32_t)(unsafe.Pointer(&ids[0])), C.size_t(len(ids)), &offsets[0], &needed)
		})
		if err != nil {
			return err
		}
		out = make([][]int32, n)
		for i := range out {
			out[i] = append([]int32(nil), ids[offsets[i]:offsets[i+1]]...)
		}
		return nil
	})
	return out, err
}

// EncodeThreaded turns one long text into ids on up to nThreads threads (0: one per core); the
// ids are exactly Encode's (kiln cuts the text only where the pieces cannot influence each other).
func (t *Tokenizer) EncodeThreaded(text string, addSpecial, parseSpecial bool, nThreads int) ([]int32, error) {
	flags := encodeFlags(addSpecial, parseSpecial)
	ctext := C.CBytes([]byte(text))
	defer C.free(ctext)
	var out []int32
	err := t.with(func(p *C.kiln_tokenizer) error {
		ids, err := fill(func(buf *C.int32_t, capacity C.size_t, n *C.size_t) C.kiln_status {
			return C.kiln_tokenizer_encode_threaded(p, (*C.char)(ctext), C.size_t(len(text)), flags,
				C.int32_t(nThreads), buf, capacity, n)
		})
		out = int32s(ids)
		return err
	})
	return out, err
}
