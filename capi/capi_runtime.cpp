// kiln_runtime_* entry points.
#include "shim.hpp"

using kiln::fail;
using kiln::capi::guarded;
using kiln::capi::require_non_null;

namespace {
kiln_runtime_options runtime_defaults() {
  kiln_runtime_options o{};
  o.struct_size = sizeof o;
  o.backend = KILN_BACKEND_AUTO;
  o.device_index = 0;
  o.n_threads = 0;
  o.log_fn = nullptr;
  o.log_user_data = nullptr;
  o.log_level = KILN_LOG_WARN;
  o.device_memory_limit = 0;
  o.tensor_parallel = 0;
  return o;
}
}  // namespace

extern "C" {

KILN_API kiln_status kiln_runtime_options_default(kiln_runtime_options* options,
                                                  size_t struct_size) {
  return guarded([&] {
    kiln::capi::init_options(options, struct_size, "kiln_runtime_options", runtime_defaults());
  });
}

KILN_API kiln_status kiln_runtime_create(const kiln_runtime_options* options,
                                         kiln_runtime** out_runtime) {
  return guarded([&] {
    require_non_null(out_runtime, "out_runtime");
    *out_runtime = nullptr;
    const kiln_runtime_options o =
        kiln::capi::read_options(options, runtime_defaults(), "kiln_runtime_options");
    if (o.n_threads < 0) {
      fail(KILN_ERR_INVALID_ARGUMENT, "kiln_runtime_options.n_threads is " +
                                          std::to_string(o.n_threads) +
                                          "; expected 0 (all cores) or a positive count");
    }
    if (o.device_index < 0) {
      fail(KILN_ERR_INVALID_ARGUMENT, "kiln_runtime_options.device_index is " +
                                          std::to_string(o.device_index) + "; expected >= 0");
    }
    if (o.tensor_parallel < 0) {
      fail(KILN_ERR_INVALID_ARGUMENT, "kiln_runtime_options.tensor_parallel is " +
                                          std::to_string(o.tensor_parallel) +
                                          "; expected 0 or 1 (off) or a GPU count");
    }
    const kiln_log_level log_level = kiln::capi::checked_enum(
        o.log_level, KILN_LOG_DEBUG, KILN_LOG_NONE, "kiln_runtime_options.log_level");
    const kiln_backend backend = kiln::capi::checked_enum(
        o.backend, KILN_BACKEND_AUTO, KILN_BACKEND_CUDA, "kiln_runtime_options.backend");
    kiln::RuntimeOptions ro;
    ro.backend = backend;
    ro.device_index = o.device_index;
    ro.n_threads = o.n_threads;
    ro.device_memory_limit = o.device_memory_limit;
    ro.tensor_parallel = o.tensor_parallel <= 1 ? 1 : o.tensor_parallel;
    ro.log.fn = o.log_fn;
    ro.log.user_data = o.log_user_data;
    ro.log.min_level = log_level;
    auto rt = std::make_unique<kiln_runtime>();
    rt->impl = std::make_unique<kiln::Runtime>(ro);
    *out_runtime = rt.release();
  });
}

KILN_API void kiln_runtime_free(kiln_runtime* runtime) { delete runtime; }

KILN_API kiln_status kiln_runtime_get_info(const kiln_runtime* runtime, kiln_runtime_info* info) {
  return guarded([&] {
    require_non_null(runtime, "runtime");
    require_non_null(info, "info");
    kiln::capi::check_struct_size(info, "kiln_runtime_info");
    const kiln::Backend& b = runtime->impl->backend();
    info->backend = b.kind();
    info->n_threads = b.n_threads();
    info->device_name = b.device_name().c_str();
  });
}

}  // extern "C"
