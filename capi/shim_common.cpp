// Process-level entry points: errors, versions, status names, the global log sink.
#include <cstdio>
#include <string>

#include "shim.hpp"

namespace kiln::capi {

namespace {
thread_local std::string t_last_error;
}

void set_last_error(const std::string& message) { t_last_error = message; }
void clear_last_error() { t_last_error.clear(); }
const char* last_error() { return t_last_error.c_str(); }

void copy_out(const void* src, size_t n_elems, size_t elem_size, void* dst, size_t capacity,
              size_t* needed, const char* what) {
  require_non_null(needed, "the size out-parameter");
  *needed = n_elems;
  if (n_elems > capacity) {
    fail(KILN_ERR_BUFFER_TOO_SMALL, std::string(what) + " needs room for " +
                                        std::to_string(n_elems) + " but the buffer holds " +
                                        std::to_string(capacity));
  }
  if (n_elems > 0) {
    require_non_null(dst, what);
    std::memcpy(dst, src, n_elems * elem_size);
  }
}

void check_flags(uint32_t flags, uint32_t known, const char* what) {
  if (flags & ~known) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%x", flags & ~known);
    fail(KILN_ERR_INVALID_ARGUMENT, std::string(what) + " has unknown bits set: 0x" + hex);
  }
}

}  // namespace kiln::capi

using kiln::capi::guarded;

extern "C" {

KILN_API const char* kiln_last_error(void) { return kiln::capi::last_error(); }

KILN_API uint32_t kiln_abi_version(void) { return KILN_ABI_VERSION; }

KILN_API const char* kiln_version_string(void) {
#if defined(KILN_HAVE_CUDA)
  return "kiln " KILN_VERSION_STRING " (ABI 1; backends: cpu, cuda)";
#else
  return "kiln " KILN_VERSION_STRING " (ABI 1; backends: cpu)";
#endif
}

KILN_API const char* kiln_status_name(kiln_status status) {
  // Read as an int: a C caller may pass any value.
  switch (kiln::capi::raw_enum(status)) {
    case KILN_OK:
      return "KILN_OK";
    case KILN_ERR_INVALID_ARGUMENT:
      return "KILN_ERR_INVALID_ARGUMENT";
    case KILN_ERR_NOT_FOUND:
      return "KILN_ERR_NOT_FOUND";
    case KILN_ERR_IO:
      return "KILN_ERR_IO";
    case KILN_ERR_FORMAT:
      return "KILN_ERR_FORMAT";
    case KILN_ERR_UNSUPPORTED:
      return "KILN_ERR_UNSUPPORTED";
    case KILN_ERR_OUT_OF_MEMORY:
      return "KILN_ERR_OUT_OF_MEMORY";
    case KILN_ERR_BUFFER_TOO_SMALL:
      return "KILN_ERR_BUFFER_TOO_SMALL";
    case KILN_ERR_OUT_OF_RANGE:
      return "KILN_ERR_OUT_OF_RANGE";
    case KILN_ERR_CONTEXT_FULL:
      return "KILN_ERR_CONTEXT_FULL";
    case KILN_ERR_CANCELLED:
      return "KILN_ERR_CANCELLED";
    case KILN_ERR_BACKEND:
      return "KILN_ERR_BACKEND";
    case KILN_ERR_BUSY:
      return "KILN_ERR_BUSY";
    case KILN_ERR_VERSION_MISMATCH:
      return "KILN_ERR_VERSION_MISMATCH";
    case KILN_ERR_INTERNAL:
      return "KILN_ERR_INTERNAL";
  }
  return "KILN_ERR_UNKNOWN";
}

KILN_API kiln_status kiln_set_log_callback(kiln_log_fn fn, void* user_data,
                                           kiln_log_level min_level) {
  return guarded([&] {
    min_level = kiln::capi::checked_enum(min_level, KILN_LOG_DEBUG, KILN_LOG_NONE, "min_level");
    kiln::LogSink sink;
    sink.fn = fn;
    sink.user_data = user_data;
    sink.min_level = fn ? min_level : KILN_LOG_WARN;
    kiln::set_global_log_sink(sink);
  });
}

}  // extern "C"
