#include "backend/cpu/f32_weights.hpp"

#include <algorithm>
#include <new>
#include <vector>

#include "core/dtype.hpp"
#include "core/error.hpp"
#include "formats/quant/ggml_type.hpp"

namespace kiln::cpu {

namespace {

// Conversion runs in chunks this large so that big tensors (embeddings) use every thread.
constexpr int64_t kConvertChunk = 1 << 16;

// The block lies inside its tensor's bytes (and, for a block format, starts and ends on whole
// blocks: every row is whole blocks, which the GGUF reader checked for the tensor's rows).
bool inside_tensor(const WeightRef& ref) {
  const TensorView& t = *ref.tensor;
  if (ref.row_begin < 0 || ref.rows <= 0 || ref.cols <= 0) return false;
  if (t.dtype == DType::GGML) {
    const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(t.ggml_type));
    if (info == nullptr || ref.cols % info->block_size != 0) return false;
  }
  return t.byte_offset((ref.row_begin + ref.rows) * ref.cols) <= t.nbytes;
}

// rows × cols block-format elements at src → float32, whole rows per thread.
void dequantize_rows(quant::GgmlType type, const uint8_t* src, float* dst, int64_t rows,
                     int64_t cols, int n_threads) {
  const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(type));
  const size_t row_bytes = static_cast<size_t>(cols / info->block_size) * info->block_bytes;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (rows * cols > kConvertChunk)
  for (int64_t r = 0; r < rows; ++r) {
    quant::dequantize(type, src + static_cast<size_t>(r) * row_bytes, dst + r * cols, cols);
  }
}

}  // namespace

Matrix F32WeightStore::matrix(const WeightRef& ref) {
  Matrix m;
  if (ref.tensor == nullptr) return m;
  if (ref.transposed) {
    m.f32 = get(ref);  // materialised in nn.Linear orientation
    return m;
  }
  const TensorView& t = *ref.tensor;
  if (t.dtype == DType::GGML) {
    const QuantDotKernel* kernel = find_quant_dot(t.ggml_type);
    if (kernel == nullptr || !inside_tensor(ref)) {
      m.f32 = get(ref);  // dequantises, or reports the block outside its tensor
      return m;
    }
    const Key key{reinterpret_cast<uintptr_t>(ref.tensor), ref.row_begin, ref.rows, ref.cols,
                  false};
    auto [it, added] = quant_blocks_.emplace(key, ref.data());
    if (added) {
      n_elements_ += ref.rows * ref.cols;
      in_place_bytes_ += ref.nbytes();
    }
    m.quant = QuantMatrix{it->second, kernel};
    return m;
  }
  const uint8_t* src = t.data + static_cast<size_t>(ref.row_begin * ref.cols) * 2;
  const bool inside = ref.row_begin >= 0 && ref.rows > 0 && ref.cols > 0 &&
                      static_cast<size_t>((ref.row_begin + ref.rows) * ref.cols) * 2 <= t.nbytes;
  if (t.dtype != DType::BF16 || !inside ||
      reinterpret_cast<uintptr_t>(src) % alignof(uint16_t) != 0) {
    m.f32 = get(ref);  // converts, or reports the block outside its tensor
    return m;
  }
  const Key key{reinterpret_cast<uintptr_t>(ref.tensor), ref.row_begin, ref.rows, ref.cols, false};
  auto [it, added] = bf16_blocks_.emplace(key, reinterpret_cast<const uint16_t*>(src));
  if (added) {
    n_elements_ += ref.rows * ref.cols;
    in_place_bytes_ += ref.nbytes();
  }
  m.bf16 = it->second;
  return m;
}

const float* F32WeightStore::get(const WeightRef& ref) {
  if (ref.tensor == nullptr) return nullptr;
  const Key key{reinterpret_cast<uintptr_t>(ref.tensor), ref.row_begin, ref.rows, ref.cols,
                ref.transposed};
  if (auto it = blocks_.find(key); it != blocks_.end()) return it->second;
  const float* out = ref.transposed ? transposed_copy(ref) : block(ref);
  blocks_.emplace(key, out);
  n_elements_ += ref.rows * ref.cols;
  return out;
}

float* F32WeightStore::allocate(int64_t n, const TensorView& t) {
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  std::unique_ptr<float[]> buf;
  try {
    buf = std::make_unique_for_overwrite<float[]>(static_cast<size_t>(n));
  } catch (const std::bad_alloc&) {
    fail(KILN_ERR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(bytes) +
                                     " bytes to convert tensor '" + t.name + "' from " +
                                     std::string(dtype_name(t.dtype)) + " to F32");
  }
  float* dst = buf.get();
  owned_.push_back(std::move(buf));
  owned_bytes_ += bytes;
  return dst;
}

// Conv1D storage: the block's row r is stored column (row_begin + r) of the [cols × width]
// tensor. Each stored row segment is converted, then scattered into the block's column c.
const float* F32WeightStore::transposed_copy(const WeightRef& ref) {
  const TensorView& t = *ref.tensor;
  if (t.dtype == DType::GGML) {
    fail(KILN_ERR_UNSUPPORTED, "tensor '" + t.name + "' in " + t.file +
                                   " is block-quantised and stored transposed (Conv1D); kiln "
                                   "reads block formats only in nn.Linear orientation");
  }
  const int64_t width = t.shape.size() == 2 ? t.shape[1] : 0;
  const size_t elem = dtype_size(t.dtype);
  if (ref.row_begin < 0 || ref.rows <= 0 || ref.cols <= 0 || t.shape.size() != 2 ||
      t.shape[0] != ref.cols || ref.row_begin + ref.rows > width ||
      static_cast<size_t>(ref.cols * width) * elem > t.nbytes) {
    fail(KILN_ERR_FORMAT, "transposed weight block columns [" + std::to_string(ref.row_begin) +
                              ", " + std::to_string(ref.row_begin + ref.rows) + ") × " +
                              std::to_string(ref.cols) + " rows lies outside tensor '" + t.name +
                              "' (" + std::to_string(t.nbytes) + " bytes of " +
                              std::string(dtype_name(t.dtype)) + ") in " + t.file);
  }
  float* dst = allocate(ref.rows * ref.cols, t);
  const int64_t rows = ref.rows, cols = ref.cols;
#pragma omp parallel num_threads(n_threads_) if (rows * cols > kConvertChunk)
  {
    std::vector<float> segment(static_cast<size_t>(rows));
#pragma omp for schedule(static)
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t* src = t.data + static_cast<size_t>(c * width + ref.row_begin) * elem;
      convert_to_f32(t.dtype, src, segment.data(), static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) dst[r * cols + c] = segment[static_cast<size_t>(r)];
    }
  }
  return dst;
}

const float* F32WeightStore::block(const WeightRef& ref) {
  const TensorView& t = *ref.tensor;
  const int64_t n = ref.rows * ref.cols;
  const size_t elem = dtype_size(t.dtype);
  const int64_t first = ref.row_begin * ref.cols;
  if (!inside_tensor(ref)) {
    fail(KILN_ERR_FORMAT, "weight block rows [" + std::to_string(ref.row_begin) + ", " +
                              std::to_string(ref.row_begin + ref.rows) + ") × " +
                              std::to_string(ref.cols) + " cols lies outside tensor '" + t.name +
                              "' (" + std::to_string(t.nbytes) + " bytes of " +
                              std::string(dtype_name(t.dtype)) + ") in " + t.file);
  }
  const uint8_t* src = t.data + t.byte_offset(first);

  if (t.dtype == DType::F32 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0) {
    return reinterpret_cast<const float*>(src);
  }
  float* dst = allocate(n, t);
  if (t.dtype == DType::GGML) {
    dequantize_rows(t.ggml_type, src, dst, ref.rows, ref.cols, n_threads_);
    return dst;
  }
  const int64_t n_chunks = (n + kConvertChunk - 1) / kConvertChunk;
#pragma omp parallel for num_threads(n_threads_) schedule(static) if (n_chunks > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    const int64_t begin = c * kConvertChunk;
    const int64_t count = std::min(kConvertChunk, n - begin);
    convert_to_f32(t.dtype, src + static_cast<size_t>(begin) * elem, dst + begin,
                   static_cast<size_t>(count));
  }
  return dst;
}

}  // namespace kiln::cpu
