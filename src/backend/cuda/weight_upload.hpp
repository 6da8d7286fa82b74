// (The F32 precision, KILN_PRECISION_F32, uploads every matrix as float32 instead: exact widening
// of BF16/F16/F32, GGUF blocks dequantised on the host, through the same staging buffers.)
// Moves model weights from the (memory-mapped) safetensors or GGUF into device memory once, at
// load: matrices in a GGUF block format the CUDA kernels compute on (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q4_K, Q5_K, Q6_K) as stored, byte for byte; other matrices as BF16 (converted from F32/F16, or
// dequantised from another block format, on the host), streamed in chunks through
// two page-locked staging buffers so that conversion of one chunk overlaps the copy of the other;
// small vectors (norm weights, biases) as float32. Progress is reported per uploaded block and may
// cancel the load (KILN_ERR_CANCELLED; every buffer taken so far is freed by its owner).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "backend/cuda/cuda_handles.hpp"
#include "backend/cuda/device_memory.hpp"
#include "backend/cuda/kernels.hpp"
#include "model/transformer_weights.hpp"

namespace kiln::cuda {

// A weight matrix on the device: BF16, or quantised as one or more row segments (q/k/v or
// gate/up stacked from tensors of different block formats, as llama.cpp's mixes store them).
struct DeviceMatrix {
  struct Segment {
    DeviceBuffer data;
    QuantMatrixView view;  // data's rows, format and shape
    int64_t first_row;     // of the whole matrix
  };
  DeviceBuffer bf16_data;  // when not quantised
  std::vector<Segment> segments;
  DeviceBuffer f32_data;  // the F32 precision: every matrix float32 (never quantised)
  int64_t rows = 0, cols = 0;

  bool quantized() const { return !segments.empty(); }
  const bf16* bf16_ptr() const { return bf16_data.as<bf16>(); }
  const float* f32_ptr() const { return f32_data.as<float>(); }
  size_t device_bytes() const;
};

class WeightUploader {
 public:
  // `total_elements`: what all upload calls together will move, for the progress fraction.
  WeightUploader(DeviceAllocator& allocator, const ProgressFn& progress, int64_t total_elements);

  // The blocks stacked by rows into one BF16 device matrix (q/k/v into one fused projection,
  // gate/up likewise). Every part must have the same number of columns.
  DeviceBuffer upload_bf16(const std::vector<const WeightRef*>& parts, const std::string& what);

  // The blocks stacked by rows, kept quantised when every part is in a format the kernels take
  // (runs of parts in the same format share a segment), else as upload_bf16.
  DeviceMatrix upload_matrix(const std::vector<const WeightRef*>& parts, const std::string& what);

  // The F32 precision: the blocks stacked by rows into one float32 device matrix, each value the
  // source's exactly (BF16/F16 widen exactly; a GGUF block format is dequantised on the host to
  // its exact float values).
  DeviceMatrix upload_matrix_f32(const std::vector<const WeightRef*>& parts,
                                 const std::string& what);

  // The blocks concatenated as one float32 vector; an absent part (null tensor) contributes
  // `absent_sizes[i]` zeros (a fused bias where only some projections have one).
  DeviceBuffer upload_f32(const std::vector<const WeightRef*>& parts,
                          const std::vector<int64_t>& absent_sizes, const std::string& what);

  // A host vector as a float32 device vector (RoPE frequencies).
  DeviceBuffer upload_host_f32(const std::vector<float>& values, const std::string& what);

  // Waits for the copies in flight; call before using what was uploaded.
  void finish();

 private:
  void advance(int64_t elements, const std::string& what);

  DeviceAllocator& allocator_;
  const ProgressFn& progress_;
  int64_t total_elements_;
  int64_t done_elements_ = 0;
  Stream stream_;
  PinnedBuffer staging_[2];
  Event staging_free_[2];
  int next_staging_ = 0;
};

// The CUDA kernels' format for a GGUF block type, or nullopt (computed as BF16 instead).
std::optional<QuantFormat> device_quant_format(const TensorView& t);

// The elements of a block; throws KILN_ERR_FORMAT when the block lies outside its tensor's bytes.
int64_t checked_block_elements(const WeightRef& ref);

}  // namespace kiln::cuda
