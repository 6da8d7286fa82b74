// F32WeightStore: gives the CPU transformer every weight as contiguous float32. Weights already
// stored as aligned F32 are used in place (zero-copy into the mmap); F16/BF16 (or misaligned F32)
// and GGUF block formats are converted once into owned buffers — except matrices, which matrix()
// hands out in place when stored as BF16 or in a block format with an integer dot kernel — and
// transposed (Conv1D) blocks are copied into nn.Linear orientation. The same block asked for twice
// (tied embeddings) is converted and counted once.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cpu/ops.hpp"
#include "model/transformer_weights.hpp"

namespace kiln::cpu {

class F32WeightStore {
 public:
  explicit F32WeightStore(int n_threads) : n_threads_(n_threads) {}
  F32WeightStore(const F32WeightStore&) = delete;
  F32WeightStore& operator=(const F32WeightStore&) = delete;

  // The block `ref` names as float32 ([rows × cols], row-major), or nullptr when ref is absent.
  // Throws KILN_ERR_FORMAT when the block lies outside its tensor's bytes, KILN_ERR_OUT_OF_MEMORY
  // when a conversion buffer cannot be allocated.
  const float* get(const WeightRef& ref);

  // A 2-D weight for matrix products: BF16 tensors stay BF16 in place (half the bytes to stream
  // per token), GGUF block formats with an integer dot kernel stay as stored in place;
  // everything else comes from get().
  Matrix matrix(const WeightRef& ref);

  // Elements of the distinct blocks handed out so far.
  int64_t n_elements() const { return n_elements_; }
  // Bytes this store allocated for conversions.
  size_t owned_bytes() const { return owned_bytes_; }
  // Bytes of the weights used in place (BF16 and block-quantised blocks in the mapping).
  size_t in_place_bytes() const { return in_place_bytes_; }

 private:
  // A non-transposed block: zero-copy or converted.
  const float* block(const WeightRef& ref);
  // A transposed block, copied into [rows × cols] row-major float32.
  const float* transposed_copy(const WeightRef& ref);
  // An owned float buffer of n elements (KILN_ERR_OUT_OF_MEMORY naming tensor t).
  float* allocate(int64_t n, const TensorView& t);

  // (tensor address, row_begin, rows, cols, transposed): identifies a block across WeightRefs.
  using Key = std::tuple<uintptr_t, int64_t, int64_t, int64_t, bool>;
  int n_threads_;
  std::map<Key, const float*> blocks_;
  std::map<Key, const uint16_t*> bf16_blocks_;
  std::map<Key, const uint8_t*> quant_blocks_;
  std::vector<std::unique_ptr<float[]>> owned_;
  int64_t n_elements_ = 0;
  size_t owned_bytes_ = 0;
  size_t in_place_bytes_ = 0;
};

}  // namespace kiln::cpu
