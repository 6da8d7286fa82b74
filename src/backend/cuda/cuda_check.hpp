// Every CUDA runtime and cuBLAS call goes through check(): a failure becomes kiln::Error with
// KILN_ERR_BACKEND naming the call and the library's own error string.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace kiln::cuda {

void check(cudaError_t status, const char* call);
void check(cublasStatus_t status, const char* call);
// After a kernel launch: a bad configuration surfaces here, at the launch that caused it.
void check_launch(const char* kernel);

}  // namespace kiln::cuda

// Stringifies the call so that the message names exactly what failed.
#define KILN_CUDA_CHECK(call) ::kiln::cuda::check((call), #call)
