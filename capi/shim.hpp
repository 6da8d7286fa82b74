// The C shim's plumbing: handle structs, the thread-local error message, the exception barrier and
// struct_size checks. Every exported function body runs inside kiln::capi::guarded(), so no C++
// exception crosses the ABI.
#pragma once

#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include "core/error.hpp"
#include "engine/model.hpp"
#include "engine/runtime.hpp"
#include "engine/session.hpp"
#include "kiln.h"
#include "tokenizer/tokenizer.hpp"
#include "train/trainer.hpp"

struct kiln_runtime {
  std::unique_ptr<kiln::Runtime> impl;
};
// A tokenizer handle either owns its tokenizer (kiln_tokenizer_load) or borrows a model's
// (kiln_model_tokenizer); impl points at it in both cases.
struct kiln_tokenizer {
  std::unique_ptr<const kiln::Tokenizer> owned;
  const kiln::Tokenizer* impl = nullptr;
  std::string trained_json;  // the tokenizer.json of a kiln_tokenizer_train result, else empty
};
struct kiln_model {
  std::shared_ptr<const kiln::Model> impl;
  const kiln::Runtime* runtime = nullptr;
  kiln_tokenizer tokenizer;  // borrows impl->tokenizer (impl null when the model has none)
};
struct kiln_session {
  std::unique_ptr<kiln::Session> impl;
};
struct kiln_trainer {
  std::unique_ptr<kiln::Trainer> impl;
  const kiln::Runtime* runtime = nullptr;
};

namespace kiln::capi {

// The thread's error message. Recording it never throws: when memory is too short to copy the
// message, a fixed one is kept instead (the status still says what happened).
void set_last_error(std::string_view message, std::string_view detail = {}) noexcept;
void clear_last_error() noexcept;
const char* last_error() noexcept;

template <typename F>
kiln_status guarded(F&& body) noexcept {
  try {
    clear_last_error();
    body();
    return KILN_OK;
  } catch (const kiln::Error& e) {
    set_last_error(e.what());
    return e.status();
  } catch (const std::bad_alloc&) {
    set_last_error("out of host memory");
    return KILN_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    set_last_error("internal error: ", e.what());
    return KILN_ERR_INTERNAL;
  } catch (...) {
    set_last_error("internal error: unknown exception");
    return KILN_ERR_INTERNAL;
  }
}

// The integer a caller passed for an enum parameter or field. A C caller may pass any int; reading
// it through memcpy keeps an out-of-range value from being undefined behaviour in C++, so it can be
// rejected with a message instead.
template <typename E>
int raw_enum(const E& e) {
  static_assert(sizeof(E) == sizeof(int), "kiln.h enums are int-sized");
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

// Returns the enum when its raw value lies in [lo, hi], else throws KILN_ERR_INVALID_ARGUMENT.
template <typename E>
E checked_enum(const E& e, int lo, int hi, const char* what) {
  const int v = raw_enum(e);
  if (v < lo || v > hi) {
    fail(KILN_ERR_INVALID_ARGUMENT, std::string(what) + " is " + std::to_string(v) + "; expected " +
                                        std::to_string(lo) + ".." + std::to_string(hi));
  }
  return static_cast<E>(v);
}

template <typename T>
void require_non_null(const T* p, const char* what) {
  if (!p) fail(KILN_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

// Options structs grow only by appending fields, and every size a released kiln.h gave a struct
// stays accepted: a caller built against an older kiln.h passes its older, smaller struct_size,
// and the library reads that prefix and takes the defaults for the fields appended since.
// OptionsRevisions<T>::older lists the earlier sizes of T (none for a struct that never grew);
// any other size — a newer header's, or garbage — is refused, so fields the library has never
// heard of are never silently ignored and nothing is read past the caller's struct.
template <typename T>
struct OptionsRevisions {
  static constexpr size_t older[] = {0};  // 0: no earlier revision
};

// The size an earlier revision had when it ended just before `field_offset` (the first field
// appended by the next revision), padded as the compiler pads the struct.
constexpr size_t revision_size(size_t field_offset, size_t alignment) {
  return (field_offset + alignment - 1) / alignment * alignment;
}

// Revision 1 had no `precision` (appended with the F32 option).
template <>
struct OptionsRevisions<kiln_model_load_options> {
  static constexpr size_t older[] = {revision_size(offsetof(kiln_model_load_options, precision),
                                                   alignof(kiln_model_load_options))};
};
// Revision 1 had no `residual_dropout` (appended with dropout).
template <>
struct OptionsRevisions<kiln_trainer_options> {
  static constexpr size_t older[] = {revision_size(offsetof(kiln_trainer_options, residual_dropout),
                                                   alignof(kiln_trainer_options))};
};

// Revision 1 had no `tensor_parallel` (appended with tensor parallelism).
template <>
struct OptionsRevisions<kiln_runtime_options> {
  static constexpr size_t older[] = {revision_size(offsetof(kiln_runtime_options, tensor_parallel),
                                                   alignof(kiln_runtime_options))};
};

// Revision 1 had no `shard_optimizer_state` (appended with ZeRO-1).
template <>
struct OptionsRevisions<kiln_data_parallel_options> {
  static constexpr size_t older[] = {
      revision_size(offsetof(kiln_data_parallel_options, shard_optimizer_state),
                    alignof(kiln_data_parallel_options))};
};

template <typename T>
bool known_struct_size(size_t size) {
  if (size == sizeof(T)) return true;
  for (const size_t s : OptionsRevisions<T>::older) {
    if (s != 0 && size == s) return true;
  }
  return false;
}

template <typename T>
[[noreturn]] void unknown_struct_size(size_t size, const char* type_name) {
  fail(KILN_ERR_VERSION_MISMATCH,
       std::string(type_name) + ".struct_size is " + std::to_string(size) +
           " but this libkiln (ABI " + std::to_string(KILN_ABI_VERSION) + ") knows size " +
           std::to_string(sizeof(T)) + "; fill it with " + type_name +
           "_default(&opts, sizeof opts) and build against a kiln.h no newer than this library");
}

// Checks a struct handed in by the caller (options, or a result the library fills): its size must
// be one the library knows. Structs with older revisions are read through read_options().
template <typename T>
void check_struct_size(const T* opts, const char* type_name) {
  if (opts && !known_struct_size<T>(opts->struct_size)) {
    unknown_struct_size<T>(opts->struct_size, type_name);
  }
}

// The caller's options as this library's struct: the caller's prefix (its struct_size bytes, of
// any revision the library knows), then the defaults for the fields appended since; NULL →
// the defaults.
template <typename T>
T read_options(const T* opts, const T& defaults, const char* type_name) {
  if (!opts) return defaults;
  check_struct_size(opts, type_name);
  T out = defaults;
  std::memcpy(static_cast<void*>(&out), opts, opts->struct_size);
  out.struct_size = sizeof(T);
  return out;
}

// Fills defaults into a caller struct of any known revision (only its struct_size bytes).
template <typename T>
void init_options(T* opts, size_t struct_size, const char* type_name, const T& defaults) {
  require_non_null(opts, type_name);
  if (!known_struct_size<T>(struct_size)) unknown_struct_size<T>(struct_size, type_name);
  std::memcpy(static_cast<void*>(opts), &defaults, struct_size);
  opts->struct_size = struct_size;
}

// Throws KILN_ERR_INVALID_ARGUMENT naming `what` when flags has bits outside `known`.
void check_flags(uint32_t flags, uint32_t known, const char* what);

// Copies into a caller buffer with the "report the size needed" rule.
void copy_out(const void* src, size_t n_elems, size_t elem_size, void* dst, size_t capacity,
              size_t* needed, const char* what);

}  // namespace kiln::capi
