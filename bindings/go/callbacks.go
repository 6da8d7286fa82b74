package kiln

/*
#include <stdint.h>
#include "kiln.h"
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
)

// tokenState is what a Generate call lends kiln through its token callback.
type tokenState struct {
	onPiece func(piece string, tokenID int32) error
	text    []byte
	err     error // the first error or panic of onPiece; generation stops at it
}

// progressState is what LoadModel lends kiln through its progress callback.
type progressState struct {
	fn  func(fraction float32, stage string) bool
	err error
}

// logSink is a log callback kept alive (through its cgo.Handle) as long as kiln may call it.
type logSink func(level LogLevel, message string)

func recovered(what string, r interface{}) error {
	return fmt.Errorf("kiln: %s callback panicked: %v", what, r)
}

//export goKilnToken
func goKilnToken(text *C.char, textLen C.size_t, tokenID C.int32_t, handle C.uintptr_t) (stop C.int) {
	s := cgo.Handle(handle).Value().(*tokenState)
	if s.err != nil {
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			s.err = recovered("token", r)
			stop = 1
		}
	}()
	piece := C.GoStringN(text, C.int(textLen))
	s.text = append(s.text, piece...)
	if s.onPiece == nil {
		return 0
	}
	if err := s.onPiece(piece, int32(tokenID)); err != nil {
		s.err = err
		return 1
	}
	return 0
}

//export goKilnProgress
func goKilnProgress(fraction C.float, stage *C.char, handle C.uintptr_t) (stop C.int) {
	s := cgo.Handle(handle).Value().(*progressState)
	defer func() {
		if r := recover(); r != nil {
			s.err = recovered("progress", r)
			stop = 1
		}
	}()
	if s.fn(float32(fraction), C.GoString(stage)) {
		return 1
	}
	return 0
}

//export goKilnLog
func goKilnLog(level C.kiln_log_level, message *C.char, handle C.uintptr_t) {
	sink := cgo.Handle(handle).Value().(logSink)
	defer func() { _ = recover() }() // a log call cannot stop anything: a panicking sink loses one line
	sink(logLevelFromC(level), C.GoString(message))
}
