// Runtime: the chosen backend plus the logger. Thread-safe: it is only read after creation.
#pragma once

#include <memory>

#include "backend/backend.hpp"
#include "engine/log.hpp"

namespace kiln {

struct RuntimeOptions {
  kiln_backend backend = KILN_BACKEND_AUTO;
  int device_index = 0;
  int n_threads = 0;
  uint64_t device_memory_limit = 0;
  // GPUs each model is split across (1 = off); kiln.h, kiln_runtime_options.tensor_parallel.
  int tensor_parallel = 1;
  LogSink log;
};

class Runtime {
 public:
  // Throws KILN_ERR_UNSUPPORTED (CUDA asked for in a build without it; tensor_parallel > 1 on the
  // CPU backend), KILN_ERR_INVALID_ARGUMENT (tensor_parallel > the devices from device_index on)
  // or KILN_ERR_BACKEND.
  explicit Runtime(const RuntimeOptions& options);
  const Backend& backend() const { return *backend_; }
  const Logger& logger() const { return logger_; }

 private:
  Logger logger_;
  std::unique_ptr<Backend> backend_;
};

}  // namespace kiln
