// Package kiln is the Go binding of kiln, an embeddable LLM runtime, calling its C ABI (kiln.h)
// through cgo.
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
// Library discovery: cgo links -lkiln. For an install outside the default paths set
// CGO_CFLAGS="$(pkg-config --cflags kiln)" CGO_LDFLAGS="$(pkg-config --libs kiln)" (or
// -I$KILN_PREFIX/include, -L$KILN_PREFIX/lib -Wl,-rpath,$KILN_PREFIX/lib).
package kiln

/*
#cgo CFLAGS: -I${SRCDIR}/../../capi
#cgo LDFLAGS: -lkiln
#include <stdlib.h>
#include "kiln.h"
*/
import "C"

import (
	"fmt"
	"runtime"
)

// ABIVersion is the kiln.h ABI version this package was compiled against.
const ABIVersion = uint32(C.KILN_ABI_VERSION)

// Version is kiln's version string ("0.1.0" plus build details).
func Version() string { return C.GoString(C.kiln_version_string()) }

// CheckABI fails when the loaded libkiln has another ABI version than kiln.h had at build time.
// NewRuntime calls it.
func CheckABI() error {
	if got := uint32(C.kiln_abi_version()); got != ABIVersion {
		return &Error{Status: int(C.KILN_ERR_VERSION_MISMATCH),
			Message: fmt.Sprintf("libkiln has ABI version %d but this package was built for %d", got, ABIVersion)}
	}
	return nil
}

// Status codes of kiln.h (Error.Status).
const (
	StatusInvalidArgument = int(C.KILN_ERR_INVALID_ARGUMENT)
	StatusNotFound        = int(C.KILN_ERR_NOT_FOUND)
	StatusIO              = int(C.KILN_ERR_IO)
	StatusFormat          = int(C.KILN_ERR_FORMAT)
	StatusUnsupported     = int(C.KILN_ERR_UNSUPPORTED)
	StatusOutOfMemory     = int(C.KILN_ERR_OUT_OF_MEMORY)
	StatusBufferTooSmall  = int(C.KILN_ERR_BUFFER_TOO_SMALL)
	StatusOutOfRange      = int(C.KILN_ERR_OUT_OF_RANGE)
	StatusContextFull     = int(C.KILN_ERR_CONTEXT_FULL)
	StatusCancelled       = int(C.KILN_ERR_CANCELLED)
	StatusBackend         = int(C.KILN_ERR_BACKEND)
	StatusBusy            = int(C.KILN_ERR_BUSY)
	StatusVersionMismatch = int(C.KILN_ERR_VERSION_MISMATCH)
	StatusInternal        = int(C.KILN_ERR_INTERNAL)
)

// Error is a failed kiln call: its kiln_status and kiln's message.
type Error struct {
	Status  int
	Message string
}

// StatusName is the status's stable name ("KILN_ERR_NOT_FOUND").
func (e *Error) StatusName() string { return C.GoString(C.kiln_status_name(C.kiln_status(e.Status))) }

func (e *Error) Error() string { return e.StatusName() + ": " + e.Message }

// Is lets errors.Is(err, &kiln.Error{Status: kiln.StatusNotFound}) match on the status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// call runs one kiln call and turns a failure into *Error. The goroutine stays on its OS thread
// from the call to kiln_last_error(), which is thread-local.
func call(f func() C.kiln_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if status := f(); status != C.KILN_OK {
		return &Error{Status: int(status), Message: C.GoString(C.kiln_last_error())}
	}
	return nil
}

// fill runs kiln.h's buffer protocol: ask for the size with no buffer, then fill one of that size.
func fill[T any](f func(buf *T, capacity C.size_t, needed *C.size_t) C.kiln_status) ([]T, error) {
	var needed C.size_t
	var buf []T
	err := call(func() C.kiln_status {
		status := f(nil, 0, &needed)
		if status != C.KILN_ERR_BUFFER_TOO_SMALL {
			return status
		}
		buf = make([]T, int(needed))
		return f(&buf[0], needed, &needed)
	})
	if err != nil {
		return nil, err
	}
	return buf[:int(needed)], nil
}

func closedError(what string) error {
	return &Error{Status: StatusInvalidArgument, Message: "the kiln." + what + " is closed"}
}
