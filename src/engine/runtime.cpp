#include "engine/runtime.hpp"

#include "core/error.hpp"

namespace kiln {

#if defined(KILN_HAVE_CUDA)
// Defined by the CUDA backend; returns null when no usable device is present.
// tensor_parallel > 1 beyond the devices present throws KILN_ERR_INVALID_ARGUMENT.
std::unique_ptr<Backend> make_cuda_backend(int device_index, uint64_t memory_limit,
                                           int tensor_parallel, std::string* why_not);
#endif

namespace {

void refuse_cpu_tensor_parallel(int tensor_parallel, const char* why_cpu) {
  if (tensor_parallel > 1) {
    fail(KILN_ERR_UNSUPPORTED, "kiln_runtime_options.tensor_parallel is " +
                                   std::to_string(tensor_parallel) +
                                   " but the runtime would use the CPU backend (" + why_cpu +
                                   "): tensor parallelism splits a model across CUDA GPUs only; "
                                   "use 0 or 1 on the CPU");
  }
}

}  // namespace

Runtime::Runtime(const RuntimeOptions& options) : logger_(options.log) {
  switch (options.backend) {
    case KILN_BACKEND_CPU:
      refuse_cpu_tensor_parallel(options.tensor_parallel, "KILN_BACKEND_CPU was asked for");
      backend_ = make_cpu_backend(options.n_threads);
      break;
    case KILN_BACKEND_CUDA:
    case KILN_BACKEND_AUTO: {
#if defined(KILN_HAVE_CUDA)
      std::string why_not;
      backend_ = make_cuda_backend(options.device_index, options.device_memory_limit,
                                   options.tensor_parallel, &why_not);
      if (!backend_ && options.backend == KILN_BACKEND_CUDA) {
        fail(KILN_ERR_BACKEND, "the CUDA backend is not available: " + why_not);
      }
      if (!backend_) logger_.info("no CUDA device (" + why_not + "); using the CPU backend");
#else
      if (options.backend == KILN_BACKEND_CUDA) {
        fail(KILN_ERR_UNSUPPORTED,
             "the CUDA backend was asked for, but this libkiln was built without CUDA "
             "(configure with -DKILN_CUDA=ON)");
      }
#endif
      if (!backend_) {
        refuse_cpu_tensor_parallel(
            options.tensor_parallel,
            "KILN_BACKEND_AUTO found no usable CUDA device, or no CUDA in this build");
        backend_ = make_cpu_backend(options.n_threads);
      }
      break;
    }
    default:
      fail(KILN_ERR_INVALID_ARGUMENT,
           "kiln_runtime_options.backend is " + std::to_string(static_cast<int>(options.backend)) +
               "; expected KILN_BACKEND_AUTO (0), _CPU (1) or _CUDA (2)");
  }
  logger_.info("runtime created: backend " + backend_->device_name() + ", " +
               std::to_string(backend_->n_threads()) + " CPU threads");
}

}  // namespace kiln
