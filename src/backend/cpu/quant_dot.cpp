// The table of integer dot kernels by weight format.
#include "backend/cpu/quant_dot.hpp"

#include "formats/quant/blocks.hpp"

namespace kiln::cpu {

namespace {

constexpr QuantDotKernel kKernels[] = {
    {quant::GgmlType::Q4_0, ActFormat::Block32, 32, sizeof(quant::BlockQ4_0), dot_q4_0},
    {quant::GgmlType::Q4_1, ActFormat::Block32, 32, sizeof(quant::BlockQ4_1), dot_q4_1},
    {quant::GgmlType::Q5_0, ActFormat::Block32, 32, sizeof(quant::BlockQ5_0), dot_q5_0},
    {quant::GgmlType::Q5_1, ActFormat::Block32, 32, sizeof(quant::BlockQ5_1), dot_q5_1},
    {quant::GgmlType::Q8_0, ActFormat::Block32, 32, sizeof(quant::BlockQ8_0), dot_q8_0},
    {quant::GgmlType::Q2_K, ActFormat::Block256, 256, sizeof(quant::BlockQ2_K), dot_q2_k},
    {quant::GgmlType::Q3_K, ActFormat::Block256, 256, sizeof(quant::BlockQ3_K), dot_q3_k},
    {quant::GgmlType::Q4_K, ActFormat::Block256, 256, sizeof(quant::BlockQ4_K), dot_q4_k},
    {quant::GgmlType::Q5_K, ActFormat::Block256, 256, sizeof(quant::BlockQ5_K), dot_q5_k},
    {quant::GgmlType::Q6_K, ActFormat::Block256, 256, sizeof(quant::BlockQ6_K), dot_q6_k},
};

}  // namespace

const QuantDotKernel* find_quant_dot(quant::GgmlType type) {
  for (const auto& k : kKernels) {
    if (k.type == type) return &k;
  }
  return nullptr;
}

}  // namespace kiln::cpu
