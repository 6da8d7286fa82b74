// Package kiln is the Go binding of kiln, an embeddable LLM runtime. It sits on the package
// kiln.dev/kiln/raw, which SWIG generates from bindings/kiln.i over kiln.h (cgo), so no kiln.h
// declaration is copied here.
//
//	rt, err := kiln.NewRuntime(kiln.RuntimeOptions{Backend: kiln.BackendCPU})
//	model, err := rt.LoadModel("models/kjv-tiny", nil)
//	s, err := model.NewSession(kiln.SessionOptions{})
//	_, err = s.Generate(ctx, "In the beginning", kiln.DefaultGenerateOptions(),
//		func(piece string, id int32) error { fmt.Print(piece); return nil })
//
// Every handle has Close (also run by a GC finalizer). Threading follows kiln.h: a Runtime and a
// Model may be used from many goroutines; a Session from one goroutine at a time (a second one gets
// an error with ErrorKind Busy), except Cancel.
//
// Library discovery: the raw package links -lkiln. For an install outside the default paths set
// CGO_CFLAGS="$(pkg-config --cflags kiln)" CGO_LDFLAGS="$(pkg-config --libs kiln)" (or
// -I$KILN_PREFIX/include, -L$KILN_PREFIX/lib -Wl,-rpath,$KILN_PREFIX/lib).
package kiln

import (
	"fmt"
	"runtime"
	"strings"

	"kiln.dev/kiln/raw"
)

// The raw layer's handle and status types (SWIG's names for kiln.h's opaque structs).
type (
	cRuntime   = raw.SwigcptrStruct_SS_kiln_runtime
	cModel     = raw.SwigcptrStruct_SS_kiln_model
	cSession   = raw.SwigcptrStruct_SS_kiln_session
	cTokenizer = raw.SwigcptrStruct_SS_kiln_tokenizer
	cTrainer   = raw.SwigcptrStruct_SS_kiln_trainer
	status     = raw.Enum_SS_kiln_status
)

// ABIVersion is the kiln.h ABI version this package was compiled against.
const ABIVersion = uint32(raw.KILN_ABI_VERSION)

// Version is kiln's version string ("0.1.0" plus build details).
func Version() string { return raw.Kiln_version_string() }

// CheckABI fails when the loaded libkiln has another ABI version than kiln.h had at build time.
// NewRuntime calls it.
func CheckABI() error {
	if got := uint32(raw.Kiln_abi_version()); got != ABIVersion {
		return &Error{Status: StatusVersionMismatch,
			Message: fmt.Sprintf("libkiln has ABI version %d but this package was built for %d", got, ABIVersion)}
	}
	return nil
}

// Status codes of kiln.h (Error.Status).
var (
	StatusInvalidArgument = int(raw.KILN_ERR_INVALID_ARGUMENT)
	StatusNotFound        = int(raw.KILN_ERR_NOT_FOUND)
	StatusIO              = int(raw.KILN_ERR_IO)
	StatusFormat          = int(raw.KILN_ERR_FORMAT)
	StatusUnsupported     = int(raw.KILN_ERR_UNSUPPORTED)
	StatusOutOfMemory     = int(raw.KILN_ERR_OUT_OF_MEMORY)
	StatusBufferTooSmall  = int(raw.KILN_ERR_BUFFER_TOO_SMALL)
	StatusOutOfRange      = int(raw.KILN_ERR_OUT_OF_RANGE)
	StatusContextFull     = int(raw.KILN_ERR_CONTEXT_FULL)
	StatusCancelled       = int(raw.KILN_ERR_CANCELLED)
	StatusBackend         = int(raw.KILN_ERR_BACKEND)
	StatusBusy            = int(raw.KILN_ERR_BUSY)
	StatusVersionMismatch = int(raw.KILN_ERR_VERSION_MISMATCH)
	StatusInternal        = int(raw.KILN_ERR_INTERNAL)
)

// Error is a failed kiln call: its kiln_status and kiln's message.
type Error struct {
	Status  int
	Message string
}

// StatusName is the status's stable name ("KILN_ERR_NOT_FOUND").
func (e *Error) StatusName() string { return raw.Kiln_status_name(status(e.Status)) }

func (e *Error) Error() string { return e.StatusName() + ": " + e.Message }

// Is lets errors.Is(err, &kiln.Error{Status: kiln.StatusNotFound}) match on the status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// call runs one kiln call and turns a failure into *Error. The goroutine stays on its OS thread
// from the call to kiln_last_error(), which is thread-local.
func call(f func() status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if s := f(); s != raw.KILN_OK {
		return &Error{Status: int(s), Message: raw.Kiln_last_error()}
	}
	return nil
}

// fill runs kiln.h's buffer protocol: ask for the size with no buffer, then fill one of that size.
func fill[T any](f func(buf []T, needed *uint64) status) ([]T, error) {
	var needed uint64
	var buf []T
	err := call(func() status {
		s := f(nil, &needed)
		if s != raw.KILN_ERR_BUFFER_TOO_SMALL {
			return s
		}
		buf = make([]T, int(needed))
		return f(buf, &needed)
	})
	if err != nil {
		return nil, err
	}
	if buf == nil {
		buf = []T{} // an empty result is an empty slice, not nil
	}
	return buf[:int(needed)], nil
}

// checkNoNUL rejects strings kiln.h reads as NUL-terminated that hold a NUL: the rest would be
// cut off (and a packed list would split there).
func checkNoNUL(what string, values ...string) error {
	for i, v := range values {
		if at := strings.IndexByte(v, 0); at >= 0 {
			return &Error{Status: StatusInvalidArgument,
				Message: fmt.Sprintf("%s[%d] holds a NUL byte at offset %d; kiln reads it as a C string", what, i, at)}
		}
	}
	return nil
}

func closedError(what string) error {
	return &Error{Status: StatusInvalidArgument, Message: "the kiln." + what + " is closed"}
}
