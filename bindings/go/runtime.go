package kiln

/*
#include <stdint.h>
#include <stdlib.h>
#include "kiln.h"
void kiln_go_set_log_callback(kiln_runtime_options *options, uintptr_t handle);
kiln_status kiln_go_set_global_log_callback(uintptr_t handle, kiln_log_level min_level);
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Backend selects the compute backend.
type Backend int

const (
	BackendAuto Backend = Backend(C.KILN_BACKEND_AUTO)
	BackendCPU  Backend = Backend(C.KILN_BACKEND_CPU)
	BackendCUDA Backend = Backend(C.KILN_BACKEND_CUDA)
)

// LogLevel is a log message's severity. Its zero value, LogDefault, means kiln's default
// minimum level (warnings).
type LogLevel int

const (
	LogDefault LogLevel = iota
	LogDebug
	LogInfo
	LogWarn
	LogError
	LogNone
)

// Each level is kiln.h's value plus one, so that the zero value can mean "kiln's default".
func (l LogLevel) toC(fallback C.kiln_log_level) C.kiln_log_level {
	if l == LogDefault {
		return fallback
	}
	return C.kiln_log_level(l - 1)
}

func logLevelFromC(l C.kiln_log_level) LogLevel { return LogLevel(l) + 1 }

// RuntimeOptions configures NewRuntime; the zero value is kiln's defaults.
type RuntimeOptions struct {
	Backend           Backend
	DeviceIndex       int32
	NThreads          int32 // CPU threads; 0 = number of cores
	Log               func(level LogLevel, message string)
	LogLevel          LogLevel // minimum level delivered (to Log, or to the process-wide sink)
	DeviceMemoryLimit uint64   // bytes; 0 = no cap
}

// RuntimeInfo describes a runtime.
type RuntimeInfo struct {
	Backend    Backend
	NThreads   int32
	DeviceName string
}

// Runtime is a kiln runtime (backend, device, threads). Close it after its models and sessions.
type Runtime struct {
	mu       sync.Mutex
	ptr      *C.kiln_runtime
	log      cgo.Handle
	children int // open models and sessions: kiln requires them freed first
}

// NewRuntime creates a runtime.
func NewRuntime(opts RuntimeOptions) (*Runtime, error) {
	if err := CheckABI(); err != nil {
		return nil, err
	}
	copts := (*C.kiln_runtime_options)(C.calloc(1, C.sizeof_kiln_runtime_options))
	defer C.free(unsafe.Pointer(copts))
	if err := call(func() C.kiln_status {
		return C.kiln_runtime_options_default(copts, C.sizeof_kiln_runtime_options)
	}); err != nil {
		return nil, err
	}
	copts.backend = C.kiln_backend(opts.Backend)
	copts.device_index = C.int32_t(opts.DeviceIndex)
	copts.n_threads = C.int32_t(opts.NThreads)
	copts.device_memory_limit = C.uint64_t(opts.DeviceMemoryLimit)
	copts.log_level = opts.LogLevel.toC(copts.log_level)
	r := &Runtime{}
	if opts.Log != nil {
		r.log = cgo.NewHandle(logSink(opts.Log))
		C.kiln_go_set_log_callback(copts, C.uintptr_t(r.log))
	}
	err := call(func() C.kiln_status { return C.kiln_runtime_create(copts, &r.ptr) })
	if err != nil {
		if r.log != 0 {
			r.log.Delete()
		}
		return nil, err
	}
	runtime.SetFinalizer(r, func(r *Runtime) { _ = r.Close() })
	return r, nil
}

// Close frees the runtime; it fails while models or sessions made from it are open. Idempotent.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ptr == nil {
		return nil
	}
	if r.children > 0 {
		return &Error{Status: StatusInvalidArgument,
			Message: fmt.Sprintf("kiln.Runtime.Close: %d models/sessions made from it are still open; close them first", r.children)}
	}
	C.kiln_runtime_free(r.ptr)
	r.ptr = nil
	if r.log != 0 {
		r.log.Delete()
		r.log = 0
	}
	runtime.SetFinalizer(r, nil)
	return nil
}

func (r *Runtime) adopt(delta int) {
	r.mu.Lock()
	r.children += delta
	r.mu.Unlock()
}

func (r *Runtime) handle() (*C.kiln_runtime, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ptr == nil {
		return nil, closedError("Runtime")
	}
	return r.ptr, nil
}

// Info describes the runtime.
func (r *Runtime) Info() (RuntimeInfo, error) {
	ptr, err := r.handle()
	if err != nil {
		return RuntimeInfo{}, err
	}
	var info C.kiln_runtime_info
	info.struct_size = C.sizeof_kiln_runtime_info
	if err := call(func() C.kiln_status { return C.kiln_runtime_get_info(ptr, &info) }); err != nil {
		return RuntimeInfo{}, err
	}
	runtime.KeepAlive(r)
	return RuntimeInfo{Backend(info.backend), int32(info.n_threads), C.GoString(info.device_name)}, nil
}

// globalLog holds the process-wide sink's handle: kiln keeps the pointer for the whole process.
var globalLog struct {
	sync.Mutex
	handle cgo.Handle
}

// SetLogCallback sets the process-wide log sink (nil restores kiln's default, stderr).
func SetLogCallback(fn func(level LogLevel, message string), minLevel LogLevel) error {
	globalLog.Lock()
	defer globalLog.Unlock()
	var h cgo.Handle
	if fn != nil {
		h = cgo.NewHandle(logSink(fn))
	}
	if err := call(func() C.kiln_status {
		return C.kiln_go_set_global_log_callback(C.uintptr_t(h), minLevel.toC(C.KILN_LOG_WARN))
	}); err != nil {
		if h != 0 {
			h.Delete()
		}
		return err
	}
	// kiln.h: calls already running may still log to the old sink; its handle is kept (it is one
	// small closure per SetLogCallback call) rather than deleted under them.
	globalLog.handle = h
	return nil
}
