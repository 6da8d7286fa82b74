#include "backend/cuda/cuda_check.hpp"

#include <string>

#include "core/error.hpp"

namespace kiln::cuda {

void check(cudaError_t status, const char* call) {
  if (status == cudaSuccess) return;
  fail(KILN_ERR_BACKEND, std::string("CUDA call ") + call + " failed: " + cudaGetErrorName(status) +
                             " (" + cudaGetErrorString(status) + ")");
}

void check(cublasStatus_t status, const char* call) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  fail(KILN_ERR_BACKEND, std::string("cuBLAS call ") + call +
                             " failed: " + cublasGetStatusName(status) + " (" +
                             cublasGetStatusString(status) + ")");
}

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status == cudaSuccess) return;
  fail(KILN_ERR_BACKEND, std::string("CUDA kernel launch ") + kernel + " failed: " +
                             cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

}  // namespace kiln::cuda
