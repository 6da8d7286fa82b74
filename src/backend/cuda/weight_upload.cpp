#include "backend/cuda/weight_upload.hpp"

#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/cuda/cuda_check.hpp"
#include "core/dtype.hpp"
#include "core/error.hpp"
#include "formats/quant/ggml_type.hpp"

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

// n elements of tensor t starting at `src` (any alignment; for a block format, the start of a
// block) into BF16 bits.
void convert_to_bf16(const TensorView& t, const uint8_t* src, uint16_t* dst, int64_t n) {
  switch (t.dtype) {
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
    case DType::GGML: {  // a block format the kernels do not take (Q2_K, Q3_K, MXFP4), or the
                         // embedding table (gathered as BF16)
      std::vector<float> values(static_cast<size_t>(n));
      quant::dequantize(t.ggml_type, src, values.data(), n);
      for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16_bits(values[static_cast<size_t>(i)]);
      return;
    }
  }
}

const uint8_t* block_data(const WeightRef& ref) {
  return ref.tensor->data + ref.tensor->byte_offset(ref.row_begin * ref.cols);
}

}  // namespace

std::optional<QuantFormat> device_quant_format(const TensorView& t) {
  if (t.dtype != DType::GGML) return std::nullopt;
  switch (t.ggml_type) {
    case quant::GgmlType::Q8_0:
      return QuantFormat::Q8_0;
    case quant::GgmlType::Q4_0:
      return QuantFormat::Q4_0;
    case quant::GgmlType::Q4_1:
      return QuantFormat::Q4_1;
    case quant::GgmlType::Q5_0:
      return QuantFormat::Q5_0;
    case quant::GgmlType::Q5_1:
      return QuantFormat::Q5_1;
    case quant::GgmlType::Q4_K:
      return QuantFormat::Q4_K;
    case quant::GgmlType::Q5_K:
      return QuantFormat::Q5_K;
    case quant::GgmlType::Q6_K:
      return QuantFormat::Q6_K;
    default:
      return std::nullopt;
  }
}

size_t DeviceMatrix::device_bytes() const {
  size_t bytes = bf16_data.size() + f32_data.size();
  for (const Segment& s : segments) bytes += s.data.size();
  return bytes;
}

int64_t checked_block_elements(const WeightRef& ref) {
  const TensorView& t = *ref.tensor;
  const int64_t n = ref.rows * ref.cols;
  const int64_t first = ref.row_begin * ref.cols;
  int64_t block = 1;
  if (t.dtype == DType::GGML) {
    const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(t.ggml_type));
    block = info != nullptr ? info->block_size : 0;
  }
  if (ref.transposed || ref.row_begin < 0 || ref.rows <= 0 || ref.cols <= 0 || block <= 0 ||
      first % block != 0 || n % block != 0 || t.byte_offset(first + n) > t.nbytes) {
    fail(KILN_ERR_FORMAT,
         "weight block rows [" + std::to_string(ref.row_begin) + ", " +
             std::to_string(ref.row_begin + ref.rows) + ") × " + std::to_string(ref.cols) +
             " cols lies outside tensor '" + t.name + "' (" + std::to_string(t.nbytes) +
             " bytes of " +
             (t.dtype == DType::GGML ? quant::ggml_type_name(static_cast<uint32_t>(t.ggml_type))
                                     : std::string(dtype_name(t.dtype))) +
             ") in " + t.file + " or is not whole blocks");
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
    for (int64_t begin = 0; begin < n; begin += kChunkElements) {
      const int64_t count = std::min(kChunkElements, n - begin);
      const int slot = next_staging_;
      next_staging_ ^= 1;
      // The copy that last read this staging buffer must be done before it is overwritten.
      KILN_CUDA_CHECK(cudaEventSynchronize(staging_free_[slot].get()));
      auto* staged = staging_[slot].as<uint16_t>();
      // `begin` is a multiple of kChunkElements, so a whole number of blocks for block formats.
      convert_to_bf16(*p->tensor, src + p->tensor->byte_offset(begin), staged, count);
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst, staged, static_cast<size_t>(count) * 2,
                                      cudaMemcpyHostToDevice, stream_.get()));
      KILN_CUDA_CHECK(cudaEventRecord(staging_free_[slot].get(), stream_.get()));
      dst += count;
    }
    advance(n, what);
  }
  return buffer;
}

DeviceMatrix WeightUploader::upload_matrix(const std::vector<const WeightRef*>& parts,
                                           const std::string& what) {
  DeviceMatrix m;
  m.cols = parts.front()->cols;
  bool all_quantized = true;
  for (const WeightRef* p : parts) {
    checked_block_elements(*p);
    m.rows += p->rows;
    if (!device_quant_format(*p->tensor) || p->cols != m.cols) all_quantized = false;
  }
  if (!all_quantized) {
    m.bf16_data = upload_bf16(parts, what);
    return m;
  }
  int64_t first_row = 0;
  for (size_t i = 0; i < parts.size();) {
    const QuantFormat format = *device_quant_format(*parts[i]->tensor);
    size_t end = i;
    int64_t rows = 0;
    while (end < parts.size() && *device_quant_format(*parts[end]->tensor) == format) {
      rows += parts[end]->rows;
      ++end;
    }
    const size_t row_bytes = quant_row_bytes(format, m.cols);
    DeviceMatrix::Segment seg{allocator_.allocate(static_cast<size_t>(rows) * row_bytes, what),
                              QuantMatrixView{}, first_row};
    seg.view = QuantMatrixView{seg.data.as<uint8_t>(), format, rows, m.cols, row_bytes};
    auto* dst = seg.data.as<uint8_t>();
    const size_t chunk_bytes = staging_[0].size();
    for (; i < end; ++i) {
      const WeightRef* p = parts[i];
      const uint8_t* src = block_data(*p);
      const size_t bytes = static_cast<size_t>(p->rows) * row_bytes;
      for (size_t begin = 0; begin < bytes; begin += chunk_bytes) {
        const size_t count = std::min(chunk_bytes, bytes - begin);
        const int slot = next_staging_;
        next_staging_ ^= 1;
        KILN_CUDA_CHECK(cudaEventSynchronize(staging_free_[slot].get()));
        std::memcpy(staging_[slot].as<uint8_t>(), src + begin, count);
        KILN_CUDA_CHECK(cudaMemcpyAsync(dst, staging_[slot].as<uint8_t>(), count,
                                        cudaMemcpyHostToDevice, stream_.get()));
        KILN_CUDA_CHECK(cudaEventRecord(staging_free_[slot].get(), stream_.get()));
        dst += count;
      }
      advance(p->rows * p->cols, what);
    }
    first_row += rows;
    m.segments.push_back(std::move(seg));
  }
  return m;
}

DeviceMatrix WeightUploader::upload_matrix_f32(const std::vector<const WeightRef*>& parts,
                                               const std::string& what) {
  DeviceMatrix m;
  m.cols = parts.front()->cols;
  int64_t total = 0;
  for (const WeightRef* p : parts) {
    total += checked_block_elements(*p);
    m.rows += p->rows;
  }
  m.f32_data = allocator_.allocate(static_cast<size_t>(total) * sizeof(float), what);
  auto* dst = m.f32_data.as<float>();
  // The staging buffers hold kChunkElements BF16 values, so half as many floats; still a whole
  // number of blocks (256 divides it) for a block format.
  constexpr int64_t kChunk = kChunkElements / 2;
  for (const WeightRef* p : parts) {
    const int64_t n = p->rows * p->cols;
    const uint8_t* src = block_data(*p);
    for (int64_t begin = 0; begin < n; begin += kChunk) {
      const int64_t count = std::min(kChunk, n - begin);
      const int slot = next_staging_;
      next_staging_ ^= 1;
      KILN_CUDA_CHECK(cudaEventSynchronize(staging_free_[slot].get()));
      auto* staged = staging_[slot].as<float>();
      const uint8_t* at = src + p->tensor->byte_offset(begin);
      if (p->tensor->dtype == DType::GGML) {
        quant::dequantize(p->tensor->ggml_type, at, staged, count);
      } else {
        convert_to_f32(p->tensor->dtype, at, staged, static_cast<size_t>(count));
      }
      KILN_CUDA_CHECK(cudaMemcpyAsync(dst, staged, static_cast<size_t>(count) * sizeof(float),
                                      cudaMemcpyHostToDevice, stream_.get()));
      KILN_CUDA_CHECK(cudaEventRecord(staging_free_[slot].get(), stream_.get()));
      dst += count;
    }
    advance(n, what);
  }
  return m;
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
    if (p->tensor->dtype == DType::GGML) {
      quant::dequantize(p->tensor->ggml_type, block_data(*p), host.data() + at, n);
    } else {
      convert_to_f32(p->tensor->dtype, block_data(*p), host.data() + at, static_cast<size_t>(n));
    }
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
