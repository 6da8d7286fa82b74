package kiln

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"

	"kiln.dev/kiln/raw"
)

// Backend selects the compute backend.
type Backend int

var (
	BackendAuto = Backend(raw.KILN_BACKEND_AUTO)
	BackendCPU  = Backend(raw.KILN_BACKEND_CPU)
	BackendCUDA = Backend(raw.KILN_BACKEND_CUDA)
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
func (l LogLevel) toC(fallback raw.Enum_SS_kiln_log_level) raw.Enum_SS_kiln_log_level {
	if l == LogDefault {
		return fallback
	}
	return raw.Enum_SS_kiln_log_level(l - 1)
}

func logLevelFromC(l raw.Enum_SS_kiln_log_level) LogLevel { return LogLevel(l) + 1 }

// RuntimeOptions configures NewRuntime; the zero value is kiln's defaults.
type RuntimeOptions struct {
	Backend           Backend
	DeviceIndex       int32
	NThreads          int32 // CPU threads; 0 = number of cores
	Log               func(level LogLevel, message string)
	LogLevel          LogLevel // minimum level delivered (to Log, or to the process-wide sink)
	DeviceMemoryLimit uint64   // bytes; 0 = no cap
	// GPUs each model is split across (devices DeviceIndex..+N-1); 0 or 1 = off (kiln.h).
	TensorParallel int32
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
	ptr      cRuntime
	log      cgo.Handle
	children int // open models and sessions: kiln requires them freed first
}

// NewRuntime creates a runtime.
func NewRuntime(opts RuntimeOptions) (*Runtime, error) {
	if err := CheckABI(); err != nil {
		return nil, err
	}
	copts := raw.NewKiln_runtime_options()
	defer raw.DeleteKiln_runtime_options(copts)
	if err := call(func() status { return raw.Kiln_runtime_options_default(copts) }); err != nil {
		return nil, err
	}
	copts.SetBackend(raw.Enum_SS_kiln_backend(opts.Backend))
	copts.SetDevice_index(int(opts.DeviceIndex))
	copts.SetN_threads(int(opts.NThreads))
	copts.SetDevice_memory_limit(opts.DeviceMemoryLimit)
	copts.SetTensor_parallel(int(opts.TensorParallel))
	copts.SetLog_level(opts.LogLevel.toC(copts.GetLog_level()))
	r := &Runtime{}
	if opts.Log != nil {
		r.log = logHandle(opts.Log)
		raw.Kiln_go_runtime_options_set_log_callback(copts, uint(r.log))
	}
	var p uintptr
	err := call(func() status { return raw.Kiln_runtime_create(copts, &p) })
	if err != nil {
		if r.log != 0 {
			r.log.Delete()
		}
		return nil, err
	}
	r.ptr = cRuntime(p)
	runtime.SetFinalizer(r, func(r *Runtime) { _ = r.Close() })
	return r, nil
}

// Close frees the runtime; it fails while models or sessions made from it are open. Idempotent.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ptr == 0 {
		return nil
	}
	if r.children > 0 {
		return &Error{Status: StatusInvalidArgument,
			Message: fmt.Sprintf("kiln.Runtime.Close: %d models/sessions made from it are still open; close them first", r.children)}
	}
	raw.Kiln_runtime_free(r.ptr)
	r.ptr = 0
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

func (r *Runtime) handle() (cRuntime, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ptr == 0 {
		return 0, closedError("Runtime")
	}
	return r.ptr, nil
}

// Info describes the runtime.
func (r *Runtime) Info() (RuntimeInfo, error) {
	ptr, err := r.handle()
	if err != nil {
		return RuntimeInfo{}, err
	}
	info := raw.NewKiln_runtime_info()
	defer raw.DeleteKiln_runtime_info(info)
	if err := call(func() status { return raw.Kiln_runtime_get_info(ptr, info) }); err != nil {
		return RuntimeInfo{}, err
	}
	out := RuntimeInfo{Backend(info.GetBackend()), int32(info.GetN_threads()), info.GetDevice_name()}
	runtime.KeepAlive(r)
	return out, nil
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
		h = logHandle(fn)
	}
	if err := call(func() status {
		return raw.Kiln_set_log_callback(uintptr(h), minLevel.toC(raw.KILN_LOG_WARN))
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
