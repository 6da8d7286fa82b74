// RAII owners of CUDA streams, events and cuBLAS handles. Each is move-only and releases its
// resource on destruction; creation failures throw KILN_ERR_BACKEND.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace kiln::cuda {

// Makes `device` current for the calling thread (the CUDA runtime keeps the current device per
// thread, so every entry point from the engine sets it before its first CUDA call).
void use_device(int device);

class Stream {
 public:
  Stream();  // a non-blocking stream on the current device
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&&) = delete;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream();
  cudaStream_t get() const { return stream_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event();  // timing disabled: used for ordering only
  Event(Event&& other) noexcept;
  Event& operator=(Event&&) = delete;
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  ~Event();
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// A cuBLAS handle bound to one stream. cuBLAS handles must not be shared between host threads
// running concurrently, so each session owns one.
class CublasHandle {
 public:
  explicit CublasHandle(cudaStream_t stream);
  CublasHandle(CublasHandle&& other) noexcept;
  CublasHandle& operator=(CublasHandle&&) = delete;
  CublasHandle(const CublasHandle&) = delete;
  CublasHandle& operator=(const CublasHandle&) = delete;
  ~CublasHandle();
  cublasHandle_t get() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
};

}  // namespace kiln::cuda

namespace kiln::cuda {

// A captured and instantiated CUDA graph (the decode step), replayed with one launch.
class GraphExec {
 public:
  GraphExec() = default;
  GraphExec(GraphExec&&) = delete;
  GraphExec& operator=(GraphExec&&) = delete;
  GraphExec(const GraphExec&) = delete;
  GraphExec& operator=(const GraphExec&) = delete;
  ~GraphExec() { reset(); }

  bool ready() const { return exec_ != nullptr; }
  // Ends the capture begun on `stream` and instantiates it. On failure nothing is kept.
  void end_capture(cudaStream_t stream);
  // Ends a capture that failed half-way, dropping it (no throw; used while unwinding).
  static void abandon_capture(cudaStream_t stream) noexcept;
  void launch(cudaStream_t stream) const;
  void reset() noexcept;

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace kiln::cuda
