// Helpers for the CUDA tests: skipping without a GPU, device arrays poisoned with NaN, BF16 on the
// host. Header-only so that each cuda_*_test.cpp stays one executable.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace kiln::cuda::test {

// Empty when a CUDA device is usable; otherwise why not (for the skip message).
inline std::string why_no_cuda_device() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(status);
  }
  if (count == 0) return "cudaGetDeviceCount reports 0 devices";
  return {};
}

// CI machines have no GPU: these tests run on the GPU machine (tools/gpu/run_gpu_checks.sh).
#define KILN_SKIP_WITHOUT_CUDA()                                                       \
  do {                                                                                 \
    const std::string why = ::kiln::cuda::test::why_no_cuda_device();                  \
    if (!why.empty()) GTEST_SKIP() << "no CUDA device (" << why << "): GPU-only test"; \
  } while (0)

#define ASSERT_CUDA_OK(call) ASSERT_EQ((call), cudaSuccess) << #call

// float → BF16 with round-to-nearest-even (what __float2bfloat16 does for finite values).
inline uint16_t to_bf16_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
inline float from_bf16_bits(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float round_to_bf16(float f) { return from_bf16_bits(to_bf16_bits(f)); }

inline std::vector<float> random_normal(size_t n, std::mt19937& rng, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<__nv_bfloat16> to_bf16(const std::vector<float>& v) {
  std::vector<__nv_bfloat16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    __nv_bfloat16_raw raw;
    raw.x = to_bf16_bits(v[i]);
    out[i] = raw;
  }
  return out;
}
inline std::vector<float> from_bf16(const std::vector<__nv_bfloat16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const __nv_bfloat16_raw raw = v[i];
    out[i] = from_bf16_bits(raw.x);
  }
  return out;
}

// A device array that starts poisoned: every byte 0xFF, which is NaN as float32 and as BF16, so
// an element a kernel fails to write shows up as NaN.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    if (cudaMalloc(&ptr_, bytes()) != cudaSuccess) throw std::runtime_error("cudaMalloc failed");
    poison();
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { (void)cudaFree(ptr_); }

  T* get() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return n_ * sizeof(T); }
  void poison() { (void)cudaMemset(ptr_, 0xFF, bytes()); }
  void upload(const std::vector<T>& host) {
    (void)cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice);
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    (void)cudaDeviceSynchronize();
    (void)cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost);
    return host;
  }

 private:
  void* ptr_ = nullptr;
  size_t n_;
};

}  // namespace kiln::cuda::test
