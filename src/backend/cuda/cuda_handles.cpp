#include "backend/cuda/cuda_handles.hpp"

#include <utility>

#include "backend/cuda/cuda_check.hpp"

namespace kiln::cuda {

void use_device(int device) { KILN_CUDA_CHECK(cudaSetDevice(device)); }

Stream::Stream() { KILN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
Stream::Stream(Stream&& other) noexcept : stream_(std::exchange(other.stream_, nullptr)) {}
Stream::~Stream() {
  if (stream_ != nullptr) {
    (void)cudaStreamSynchronize(stream_);
    (void)cudaStreamDestroy(stream_);
  }
}
void Stream::synchronize() const { KILN_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

Event::Event() { KILN_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
Event::Event(Event&& other) noexcept : event_(std::exchange(other.event_, nullptr)) {}
Event::~Event() {
  if (event_ != nullptr) (void)cudaEventDestroy(event_);
}

CublasHandle::CublasHandle(cudaStream_t stream) {
  KILN_CUDA_CHECK(cublasCreate(&handle_));
  try {
    KILN_CUDA_CHECK(cublasSetStream(handle_, stream));
  } catch (...) {
    (void)cublasDestroy(handle_);
    throw;
  }
}
CublasHandle::CublasHandle(CublasHandle&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)) {}
CublasHandle::~CublasHandle() {
  if (handle_ != nullptr) (void)cublasDestroy(handle_);
}

}  // namespace kiln::cuda

namespace kiln::cuda {

void GraphExec::end_capture(cudaStream_t stream) {
  reset();
  KILN_CUDA_CHECK(cudaStreamEndCapture(stream, &graph_));
  const cudaError_t status = cudaGraphInstantiate(&exec_, graph_, 0);
  if (status != cudaSuccess) {
    exec_ = nullptr;
    reset();
    check(status, "cudaGraphInstantiate");
  }
}

void GraphExec::abandon_capture(cudaStream_t stream) noexcept {
  cudaGraph_t partial = nullptr;
  (void)cudaStreamEndCapture(stream, &partial);
  if (partial != nullptr) (void)cudaGraphDestroy(partial);
  (void)cudaGetLastError();
}

void GraphExec::launch(cudaStream_t stream) const {
  KILN_CUDA_CHECK(cudaGraphLaunch(exec_, stream));
}

void GraphExec::reset() noexcept {
  if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
  if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
  exec_ = nullptr;
  graph_ = nullptr;
}

}  // namespace kiln::cuda
