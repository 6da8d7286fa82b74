#include "engine/quant_mix.hpp"

#include <regex>

namespace kiln {

using quant::GgmlType;

namespace {

constexpr int64_t kSuperBlock = 256;  // QK_K: Q4_K and Q6_K rows are whole super-blocks
constexpr int64_t kBlock = 32;        // Q5_0 and Q8_0 rows are whole 32-element blocks

bool use_more_bits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

// llama.cpp's fallback for a K-quant whose rows are not whole super-blocks: the legacy type of
// about the same bits per weight, and F16 when even that one's 32-element blocks do not fit.
GgmlType fit_rows(GgmlType t, int64_t row) {
  if (t == GgmlType::Q4_K && row % kSuperBlock != 0) t = GgmlType::Q5_0;
  if (t == GgmlType::Q6_K && row % kSuperBlock != 0) t = GgmlType::Q8_0;
  if ((t == GgmlType::Q5_0 || t == GgmlType::Q8_0) && row % kBlock != 0) t = GgmlType::F16;
  return t;
}

GgmlType q4_k_m_type(const std::string& name, bool has_output, int64_t n_layers) {
  if (name == "output.weight" || (!has_output && name == "token_embd.weight")) {
    return GgmlType::Q6_K;
  }
  static const std::regex kMoreBits(R"(blk\.(\d+)\.(attn_v|ffn_down)\.weight)");
  std::smatch m;
  if (std::regex_match(name, m, kMoreBits) && use_more_bits(std::stoll(m[1].str()), n_layers)) {
    return GgmlType::Q6_K;
  }
  return GgmlType::Q4_K;
}

}  // namespace

GgmlType quantized_tensor_type(QuantizeTarget target, const std::string& name,
                               const std::vector<int64_t>& dims, bool has_output,
                               int64_t n_layers) {
  if (dims.size() < 2) return GgmlType::F32;
  switch (target) {
    case QuantizeTarget::F16:
      return GgmlType::F16;
    case QuantizeTarget::Q8_0:
      return fit_rows(GgmlType::Q8_0, dims[0]);
    case QuantizeTarget::Q4_K_M:
      return fit_rows(q4_k_m_type(name, has_output, n_layers), dims[0]);
  }
  return GgmlType::F16;
}

}  // namespace kiln
