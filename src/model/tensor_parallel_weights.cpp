#include "model/tensor_parallel_weights.hpp"

#include <cstring>
#include <string>

#include "core/error.hpp"
#include "formats/quant/ggml_type.hpp"

namespace kiln {

namespace {

std::string range_text(IndexRange r) {
  return "[" + std::to_string(r.begin) + ", " + std::to_string(r.end()) + ")";
}

void refuse_transposed(const WeightRef& ref, const char* role) {
  if (ref.transposed) {
    fail(KILN_ERR_UNSUPPORTED, std::string("tensor parallelism cannot slice ") + role + " (" +
                                   ref.tensor->name + "): it is stored transposed (Conv1D)");
  }
}

}  // namespace

WeightRef slice_rows(const WeightRef& ref, IndexRange range, const char* role) {
  if (!ref.present()) return ref;
  refuse_transposed(ref, role);
  if (range.begin < 0 || range.count <= 0 || range.end() > ref.rows) {
    fail(KILN_ERR_INTERNAL, std::string("tensor-parallel rows ") + range_text(range) + " of " +
                                role + " (" + ref.tensor->name + ") lie outside its " +
                                std::to_string(ref.rows) + " rows");
  }
  WeightRef out = ref;
  out.row_begin = ref.row_begin + range.begin;
  out.rows = range.count;
  return out;
}

WeightRef ShardedWeights::slice_columns(const WeightRef& ref, IndexRange range, const char* role) {
  if (!ref.present()) return ref;
  refuse_transposed(ref, role);
  const TensorView& t = *ref.tensor;
  if (range.begin < 0 || range.count <= 0 || range.end() > ref.cols) {
    fail(KILN_ERR_INTERNAL, std::string("tensor-parallel columns ") + range_text(range) + " of " +
                                role + " (" + t.name + ") lie outside its " +
                                std::to_string(ref.cols) + " columns");
  }
  if (t.dtype == DType::GGML) {
    const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(t.ggml_type));
    if (range.begin % info->block_size != 0 || range.count % info->block_size != 0) {
      fail(KILN_ERR_UNSUPPORTED,
           std::string("tensor parallelism cannot split ") + role + " (" + t.name + ", " +
               info->name + ") at columns " + range_text(range) + ": its blocks hold " +
               std::to_string(info->block_size) + " columns; use fewer ranks");
    }
  }
  const size_t row_stride = t.byte_offset(ref.cols);
  const size_t skip = t.byte_offset(range.begin);
  const size_t row_bytes = t.byte_offset(range.count);
  std::vector<uint8_t>& bytes = buffers_.emplace_back(row_bytes * static_cast<size_t>(ref.rows));
  const uint8_t* first_row = ref.data();
  for (int64_t r = 0; r < ref.rows; ++r) {
    std::memcpy(bytes.data() + static_cast<size_t>(r) * row_bytes,
                first_row + static_cast<size_t>(r) * row_stride + skip, row_bytes);
  }
  TensorView& view = views_.emplace_back();
  view.name =
      t.name + "[:, " + std::to_string(range.begin) + ":" + std::to_string(range.end()) + "]";
  view.dtype = t.dtype;
  view.ggml_type = t.ggml_type;
  view.shape = {ref.rows, range.count};
  view.data = bytes.data();
  view.nbytes = bytes.size();
  view.file = t.file;
  WeightRef out;
  out.tensor = &view;
  out.rows = ref.rows;
  out.cols = range.count;
  return out;
}

ShardedWeights::ShardedWeights(const TransformerWeights& full, const TensorParallelShard& shard)
    : weights_(full) {
  const IndexRange q = shard.q_rows(), kv = shard.kv_rows(), ffn = shard.ffn_rows();
  for (LayerWeights& l : weights_.layers) {
    l.wq = slice_rows(l.wq, q, "q_proj");
    l.wk = slice_rows(l.wk, kv, "k_proj");
    l.wv = slice_rows(l.wv, kv, "v_proj");
    l.bq = slice_rows(l.bq, q, "q_proj bias");
    l.bk = slice_rows(l.bk, kv, "k_proj bias");
    l.bv = slice_rows(l.bv, kv, "v_proj bias");
    l.wo = slice_columns(l.wo, shard.o_columns(), "o_proj");
    l.w_gate = slice_rows(l.w_gate, ffn, "gate_proj");
    l.w_up = slice_rows(l.w_up, ffn, "up_proj");
    l.w_down = slice_columns(l.w_down, ffn, "down_proj");
    // bo, the norms and q/k norm weights stay whole: the executor adds bo once after the sum.
  }
}

size_t ShardedWeights::copied_bytes() const {
  size_t total = 0;
  for (const auto& b : buffers_) total += b.size();
  return total;
}

}  // namespace kiln
