package kiln

import (
	"fmt"
	"runtime/cgo"

	"kiln.dev/kiln/raw"
)

// Callbacks reach Go through the raw layer's C trampolines: kiln gets a cgo.Handle of a
// raw.TokenFunc / raw.ProgressFunc / raw.LogFunc as user_data (kiln.i, SWIGGO section). The
// functions here catch the user's errors and panics, so none unwinds into kiln.

// tokenState is what a Generate call lends kiln through its token callback.
type tokenState struct {
	onPiece func(piece string, tokenID int32) error
	text    []byte
	err     error // the first error or panic of onPiece; generation stops at it
}

func recovered(what string, r interface{}) error {
	return fmt.Errorf("kiln: %s callback panicked: %v", what, r)
}

func (s *tokenState) handle() cgo.Handle {
	return cgo.NewHandle(raw.TokenFunc(func(piece string, tokenID int32) (stop bool) {
		if s.err != nil {
			return true
		}
		defer func() {
			if r := recover(); r != nil {
				s.err = recovered("token", r)
				stop = true
			}
		}()
		s.text = append(s.text, piece...)
		if s.onPiece == nil {
			return false
		}
		if err := s.onPiece(piece, tokenID); err != nil {
			s.err = err
			return true
		}
		return false
	}))
}

// progressState is what LoadModel (and the other long operations) lend kiln through a progress
// callback.
type progressState struct {
	fn  func(fraction float32, stage string) bool
	err error
}

func (s *progressState) handle() cgo.Handle {
	return cgo.NewHandle(raw.ProgressFunc(func(fraction float32, stage string) (stop bool) {
		defer func() {
			if r := recover(); r != nil {
				s.err = recovered("progress", r)
				stop = true
			}
		}()
		return s.fn(fraction, stage)
	}))
}

// logHandle is a log sink kept alive (through its cgo.Handle) as long as kiln may call it. A
// panicking sink loses one line: a log call cannot stop anything.
func logHandle(sink func(level LogLevel, message string)) cgo.Handle {
	return cgo.NewHandle(raw.LogFunc(func(level int, message string) {
		defer func() { _ = recover() }()
		sink(logLevelFromC(raw.Enum_SS_kiln_log_level(level)), message)
	}))
}
