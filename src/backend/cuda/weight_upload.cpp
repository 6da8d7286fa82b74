#include "backend/cuda/weight_upload.hpp"

#include <algorithm>
#include <cstring>

#include "backend/cuda/cuda_check.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"

namespace kiln::cuda {

namespace {

// Elements per staging chunk (8 MiB of BF16 per buffer).
constexpr int64_t kChunkElements = int64_t{1} << 22;

// float32 → BF16, round to nearest even; NaN stays NaN (quiet).
uint16_t f32_to_bf16_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  }
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// n elements of `src` (type t, any alignment) into BF16 bits.
void convert_to_bf16(DType t, const uint8_t* src, uint16_t* dst, int64_t n) {
  switch (t) {
    case DType::BF16:
      std::memcpy(dst, src, static_cast<size_t>(n) * 2);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f32_to_bf16_bits(f16_to_f32(h));
      }
      return;
    case DType::F32:
      for (int64_t i = 0; i < n; ++i) {
        float f;
        std::memcpy(&f, src + 4 * i, 4);
        dst[i] = f32_to_bf16_bits(f);
      }
      return;
    case DType::GGML:  // refused by checked_block_elements before any conversion
      fail(KILN_ERR_INTERNAL, "convert_to_bf16 given a GGML block-quantised tensor");
  }
}

const uint8_t* block_data(const WeightRef& ref) {
  return ref.tensor->data +
         static_cast<size_t>(ref.row_begin * ref.cols) * dtype_size(ref.tensor->dtype);
}

}  // namespace

int64_t checked_block_elements(const WeightRef& ref) {
  const TensorView& t = *ref.tensor;
  const int64_t n = ref.rows * ref.cols;
  const int64_t first = ref.row_begin * ref.cols;
  // The engine dequantises GGUF tensors before they reach this backend
  // (Backend::keeps_quantized_weights() is false here).
  if (t.dtype == DType::GGML) {
    fail(KILN_ERR_UNSUPPORTED,
         "tensor '" + t.name + "' in " + t.file +
             " is still block-quantised; the CUDA backend takes float weights");
  }
  if (ref.row_begin < 0 || ref.rows <= 0 || ref.cols <= 0 ||
      static_cast<size_t>(first + n) * dtype_size(t.dtype) > t.nbytes) {
    fail(KILN_ERR_FORMAT, "weight block rows [" + std::to_string(ref.row_begin) + ", " +
                              std::to_string(ref.row_begin + ref.rows) + ") × " +
                              std::to_string(ref.cols) + " cols lies outside tensor '" + t.name +
                              "' (" + std::to_string(t.nbytes) + " bytes of " +
                              std::string(dtype_name(t.dtype)) + ") in " + t.file);
  }
  return n;
}

WeightUploader::WeightUploader(DeviceAllocator& allocator, const ProgressFn& progress,
                               int64_t total_elements)
    : allocator_(allocator),
      progress_(progress),
      total_elements_(std::max<int64_t>(total_elements, 1)),
      staging_{PinnedBuffer(kChunkElements * 2, "weight upload staging"),
               PinnedBuffer(kChunkElements * 2, "weight upload staging")} {}

void WeightUploader::advance(int64_t elements, const std::string& what) {
  done_elements_ += elements;
  const float fraction = static_cast<float>(static_cast<double>(done_elements_) /
                                            static_cast<double>(total_elements_));
  if (progress_ && !progress_(std::min(fraction, 1.0f), "uploading weights to the GPU")) {
    fail(KILN_ERR_CANCELLED, "model load cancelled by the progress callback (after " + what + ")");
  }
}

DeviceBuffer WeightUploader::upload_bf16(const std::vector<const WeightRef*>& parts,
                                         const std::string& what) {
  int64_t total = 0;
  for (const WeightRef* p : parts) total += checked_block_elements(*p);
  DeviceBuffer buffer = allocator_.allocate(static_cast<size_t>(total) * 2, what);
  auto* dst = buffer.as<uint16_t>();
  for (const WeightRef* p : parts) {
    const int64_t n = p->rows * p->cols;
    const uint8_t* src = block_data(*p);
    const size_t elem = dtype_size(p->tensor->dtype);
    for (int64_t begin = 0; begin < n; begin += kChunkElements) {
      const int64_t count = std::min(kChunkElements, n - begin);
      const int slot = next_staging_;
      next_staging_ ^= 1;
      // The copy that last read this staging buffer must be done before it is overwritten.
      KILN_CUDA_CHECK(cudaEventSynchronize(staging_free_[slot].get()));
      auto* staged = staging_[slot].as<uint16_t>();
      convert_to_bf16(p->tensor->dtype, src + static_cast<size_t>(begin) * elem, staged, count);
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst, staged, static_cast<size_t>(count) * 2,
                                      cudaMemcpyHostToDevice, stream_.get()));
      KILN_CUDA_CHECK(cudaEventRecord(staging_free_[slot].get(), stream_.get()));
      dst += count;
    }
    advance(n, what);
  }
  return buffer;
}

DeviceBuffer WeightUploader::upload_f32(const std::vector<const WeightRef*>& parts,
                                        const std::vector<int64_t>& absent_sizes,
                                        const std::string& what) {
  std::vector<float> host;
  for (size_t i = 0; i < parts.size(); ++i) {
    const WeightRef* p = parts[i];
    if (p->tensor == nullptr) {
      host.resize(host.size() + static_cast<size_t>(absent_sizes.at(i)), 0.0f);
      continue;
    }
    const int64_t n = checked_block_elements(*p);
    const size_t at = host.size();
    host.resize(at + static_cast<size_t>(n));
    convert_to_f32(p->tensor->dtype, block_data(*p), host.data() + at, static_cast<size_t>(n));
    advance(n, what);
  }
  return upload_host_f32(host, what);
}

DeviceBuffer WeightUploader::upload_host_f32(const std::vector<float>& values,
                                             const std::string& what) {
  DeviceBuffer buffer = allocator_.allocate(values.size() * sizeof(float), what);
  // Synchronous: the host vector dies with this call (and these vectors are small).
  KILN_CUDA_CHECK(cudaMemcpy(buffer.get(), values.data(), values.size() * sizeof(float),
                             cudaMemcpyHostToDevice));
  return buffer;
}

void WeightUploader::finish() { stream_.synchronize(); }

}  // namespace kiln::cuda
