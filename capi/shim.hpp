// The C shim's plumbing: handle structs, the thread-local error message, the exception barrier and
// struct_size checks. Every exported function body runs inside kiln::capi::guarded(), so no C++
// exception crosses the ABI.
#pragma once

#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
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

void set_last_error(const std::string& message);
void clear_last_error();
const char* last_error();

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
    set_last_error(std::string("internal error: ") + e.what());
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

// Checks an options struct handed in by the caller. The library accepts exactly the sizes it knows
// (one per ABI revision of the struct; this is revision 1), so that fields it has never heard of
// are never silently ignored and fields it expects are never read past the caller's struct.
template <typename T>
void check_struct_size(const T* opts, const char* type_name) {
  if (opts && opts->struct_size != sizeof(T)) {
    fail(KILN_ERR_VERSION_MISMATCH,
         std::string(type_name) + ".struct_size is " + std::to_string(opts->struct_size) +
             " but this libkiln (ABI " + std::to_string(KILN_ABI_VERSION) + ") knows size " +
             std::to_string(sizeof(T)) + "; fill it with " + type_name +
             "_default(&opts, sizeof opts) and build against the kiln.h of this library");
  }
}

// Fills defaults into a caller struct after checking its size.
template <typename T>
void init_options(T* opts, size_t struct_size, const char* type_name, const T& defaults) {
  require_non_null(opts, type_name);
  if (struct_size != sizeof(T)) {
    fail(KILN_ERR_VERSION_MISMATCH,
         std::string(type_name) + ": struct_size argument is " + std::to_string(struct_size) +
             " but this libkiln (ABI " + std::to_string(KILN_ABI_VERSION) + ") knows size " +
             std::to_string(sizeof(T)) + "; build against the kiln.h of this library");
  }
  *opts = defaults;
  opts->struct_size = sizeof(T);
}

// Throws KILN_ERR_INVALID_ARGUMENT naming `what` when flags has bits outside `known`.
void check_flags(uint32_t flags, uint32_t known, const char* what);

// Copies into a caller buffer with the "report the size needed" rule.
void copy_out(const void* src, size_t n_elems, size_t elem_size, void* dst, size_t capacity,
              size_t* needed, const char* what);

}  // namespace kiln::capi
