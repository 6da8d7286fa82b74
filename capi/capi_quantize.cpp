// kiln_model_quantize: conversion of a model to GGUF (engine/quantize_model.hpp).
#include "engine/quantize_model.hpp"
#include "shim.hpp"

using kiln::capi::guarded;
using kiln::capi::require_non_null;

namespace {
kiln_quantize_options quantize_defaults() {
  kiln_quantize_options o{};
  o.struct_size = sizeof o;
  o.type = KILN_QUANTIZE_Q4_K_M;
  return o;
}
}  // namespace

extern "C" {

KILN_API kiln_status kiln_quantize_options_default(kiln_quantize_options* options,
                                                   size_t struct_size) {
  return guarded([&] {
    kiln::capi::init_options(options, struct_size, "kiln_quantize_options", quantize_defaults());
  });
}

KILN_API kiln_status kiln_model_quantize(kiln_runtime* runtime, const char* src, const char* dst,
                                         const kiln_quantize_options* options) {
  return guarded([&] {
    require_non_null(runtime, "runtime");
    require_non_null(src, "src");
    require_non_null(dst, "dst");
    kiln::capi::check_struct_size(options, "kiln_quantize_options");
    const kiln_quantize_options o = options ? *options : quantize_defaults();
    const kiln_quantize_type type = kiln::capi::checked_enum(
        o.type, KILN_QUANTIZE_F16, KILN_QUANTIZE_Q4_K_M, "kiln_quantize_options.type");
    const kiln::QuantizeTarget target = type == KILN_QUANTIZE_F16    ? kiln::QuantizeTarget::F16
                                        : type == KILN_QUANTIZE_Q8_0 ? kiln::QuantizeTarget::Q8_0
                                                                     : kiln::QuantizeTarget::Q4_K_M;
    kiln::ProgressFn progress;
    if (o.progress_fn) {
      progress = [fn = o.progress_fn, ud = o.progress_user_data](float f, const char* stage) {
        return fn(f, stage, ud) == 0;
      };
    }
    const int n_threads = o.n_threads > 0 ? o.n_threads : runtime->impl->backend().n_threads();
    kiln::quantize_model(src, dst, target, n_threads, progress);
  });
}

}  // extern "C"
