// Device memory for the CUDA backend. Every device allocation goes through one DeviceAllocator per
// backend, which enforces the runtime's device-memory cap (kiln_runtime_options
// .device_memory_limit; 0 = no cap) and turns both a breached cap and a refused cudaMalloc into
// KILN_ERR_OUT_OF_MEMORY naming the bytes asked for and the bytes available. Buffers are RAII: a
// constructor that throws half-way frees what it already took.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kiln::cuda {

class DeviceAllocator;

// One device allocation; move-only; freed (and its bytes returned to the cap) on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  friend class DeviceAllocator;
  DeviceBuffer(std::shared_ptr<DeviceAllocator> owner, void* ptr, size_t bytes)
      : owner_(std::move(owner)), ptr_(ptr), bytes_(bytes) {}
  void release() noexcept;

  std::shared_ptr<DeviceAllocator> owner_;  // keeps the allocator (and its device) alive
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

class DeviceAllocator : public std::enable_shared_from_this<DeviceAllocator> {
 public:
  // limit_bytes == 0: no cap beyond what the device has.
  static std::shared_ptr<DeviceAllocator> create(int device, uint64_t limit_bytes,
                                                 std::string device_name);

  // `what` names the allocation in the out-of-memory message ("KV cache", "weight 'x'").
  // Throws KILN_ERR_OUT_OF_MEMORY (cap or device full) or KILN_ERR_BACKEND (other CUDA errors).
  DeviceBuffer allocate(size_t bytes, const std::string& what);

  int device() const { return device_; }
  uint64_t limit() const { return limit_; }
  uint64_t in_use() const { return in_use_.load(); }

 private:
  friend class DeviceBuffer;
  DeviceAllocator(int device, uint64_t limit_bytes, std::string device_name)
      : device_(device), limit_(limit_bytes), device_name_(std::move(device_name)) {}
  void free(void* ptr, size_t bytes) noexcept;

  int device_;
  uint64_t limit_;
  std::string device_name_;
  std::atomic<uint64_t> in_use_{0};
};

// Page-locked host memory (for asynchronous copies); move-only RAII.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  // Throws KILN_ERR_OUT_OF_MEMORY naming `what` and the bytes.
  PinnedBuffer(size_t bytes, const std::string& what);
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();

  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace kiln::cuda
