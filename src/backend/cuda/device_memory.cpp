#include "backend/cuda/device_memory.hpp"

#include <cuda_runtime.h>

#include <utility>

#include "backend/cuda/cuda_check.hpp"
#include "core/error.hpp"

namespace kiln::cuda {

// ---------------------------------------------------------------------------------------------
// DeviceBuffer

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : owner_(std::move(other.owner_)),
      ptr_(std::exchange(other.ptr_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::move(other.owner_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() { release(); }

void DeviceBuffer::release() noexcept {
  if (ptr_ != nullptr && owner_) owner_->free(ptr_, bytes_);
  ptr_ = nullptr;
  bytes_ = 0;
  owner_.reset();
}

// ---------------------------------------------------------------------------------------------
// DeviceAllocator

std::shared_ptr<DeviceAllocator> DeviceAllocator::create(int device, uint64_t limit_bytes,
                                                         std::string device_name) {
  return std::shared_ptr<DeviceAllocator>(
      new DeviceAllocator(device, limit_bytes, std::move(device_name)));
}

DeviceBuffer DeviceAllocator::allocate(size_t bytes, const std::string& what) {
  if (bytes == 0) return {};
  // Reserve the bytes under the cap first, so that concurrent allocations cannot both pass it.
  uint64_t used = in_use_.load();
  do {
    if (limit_ != 0 && (used > limit_ || bytes > limit_ - used)) {
      fail(KILN_ERR_OUT_OF_MEMORY,
           "out of device memory: " + what + " asked for " + std::to_string(bytes) + " bytes, " +
               std::to_string(used > limit_ ? 0 : limit_ - used) +
               " available under the device memory cap of " + std::to_string(limit_) + " bytes (" +
               std::to_string(used) + " in use)");
    }
  } while (!in_use_.compare_exchange_weak(used, used + bytes));

  KILN_CUDA_CHECK(cudaSetDevice(device_));
  void* ptr = nullptr;
  const cudaError_t status = cudaMalloc(&ptr, bytes);
  if (status != cudaSuccess) {
    in_use_.fetch_sub(bytes);
    (void)cudaGetLastError();  // the failed allocation must not be reported by a later call
    if (status == cudaErrorMemoryAllocation) {
      size_t free_bytes = 0, total_bytes = 0;
      (void)cudaMemGetInfo(&free_bytes, &total_bytes);
      fail(KILN_ERR_OUT_OF_MEMORY,
           "out of device memory: " + what + " asked for " + std::to_string(bytes) + " bytes, " +
               std::to_string(free_bytes) + " available on the device (" + device_name_ + ", " +
               std::to_string(total_bytes) + " bytes in all)");
    }
    check(status, "cudaMalloc");
  }
  return DeviceBuffer(shared_from_this(), ptr, bytes);
}

void DeviceAllocator::free(void* ptr, size_t bytes) noexcept {
  // cudaFree waits for work still using the memory; its error cannot be thrown from here.
  (void)cudaSetDevice(device_);
  (void)cudaFree(ptr);
  in_use_.fetch_sub(bytes);
}

// ---------------------------------------------------------------------------------------------
// PinnedBuffer

PinnedBuffer::PinnedBuffer(size_t bytes, const std::string& what) : bytes_(bytes) {
  if (bytes == 0) return;
  const cudaError_t status = cudaMallocHost(&ptr_, bytes);
  if (status != cudaSuccess) {
    ptr_ = nullptr;
    (void)cudaGetLastError();
    fail(KILN_ERR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(bytes) +
                                     " bytes of page-locked host memory for " + what + ": " +
                                     cudaGetErrorString(status));
  }
}

PinnedBuffer::PinnedBuffer(PinnedBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_ != nullptr) (void)cudaFreeHost(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_ != nullptr) (void)cudaFreeHost(ptr_);
}

}  // namespace kiln::cuda
