#include "formats/quant/ggml_type.hpp"

#include "core/error.hpp"
#include "formats/quant/blocks.hpp"
#include "formats/quant/dequantize_rows.hpp"

namespace kiln::quant {

namespace {

constexpr GgmlTypeInfo kTypes[] = {
    {GgmlType::F32, "f32", 1, 4},
    {GgmlType::F16, "f16", 1, 2},
    {GgmlType::Q4_0, "q4_0", kQK32, sizeof(BlockQ4_0)},
    {GgmlType::Q4_1, "q4_1", kQK32, sizeof(BlockQ4_1)},
    {GgmlType::Q5_0, "q5_0", kQK32, sizeof(BlockQ5_0)},
    {GgmlType::Q5_1, "q5_1", kQK32, sizeof(BlockQ5_1)},
    {GgmlType::Q8_0, "q8_0", kQK32, sizeof(BlockQ8_0)},
    {GgmlType::Q2_K, "q2_K", kQK_K, sizeof(BlockQ2_K)},
    {GgmlType::Q3_K, "q3_K", kQK_K, sizeof(BlockQ3_K)},
    {GgmlType::Q4_K, "q4_K", kQK_K, sizeof(BlockQ4_K)},
    {GgmlType::Q5_K, "q5_K", kQK_K, sizeof(BlockQ5_K)},
    {GgmlType::Q6_K, "q6_K", kQK_K, sizeof(BlockQ6_K)},
    {GgmlType::BF16, "bf16", 1, 2},
    {GgmlType::MXFP4, "mxfp4", kQK32, sizeof(BlockMXFP4)},
};

// Names of the ids ggml defines that kiln does not read (for error messages only). Ids 4, 5 and
// 31-33, 36-38 were removed from ggml and are never valid.
struct OtherType {
  uint32_t id;
  const char* name;
};
constexpr OtherType kOtherTypes[] = {
    {9, "q8_1"},    {15, "q8_K"},  {16, "iq2_xxs"}, {17, "iq2_xs"}, {18, "iq3_xxs"}, {19, "iq1_s"},
    {20, "iq4_nl"}, {21, "iq3_s"}, {22, "iq2_s"},   {23, "iq4_xs"}, {24, "i8"},      {25, "i16"},
    {26, "i32"},    {27, "i64"},   {28, "f64"},     {29, "iq1_m"},  {34, "tq1_0"},   {35, "tq2_0"},
};

}  // namespace

const GgmlTypeInfo* find_ggml_type(uint32_t id) {
  for (const auto& t : kTypes) {
    if (static_cast<uint32_t>(t.type) == id) return &t;
  }
  return nullptr;
}

std::string ggml_type_name(uint32_t id) {
  if (const GgmlTypeInfo* t = find_ggml_type(id)) return t->name;
  for (const auto& t : kOtherTypes) {
    if (t.id == id) return t.name;
  }
  return "type " + std::to_string(id);
}

void dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  const GgmlTypeInfo* info = find_ggml_type(static_cast<uint32_t>(type));
  if (info == nullptr || n < 0 || n % info->block_size != 0) {
    fail(KILN_ERR_INTERNAL, "dequantize: " + std::to_string(n) + " elements of " +
                                ggml_type_name(static_cast<uint32_t>(type)) +
                                " is not a whole number of blocks");
  }
  const int64_t blocks = n / info->block_size;
  switch (type) {
    case GgmlType::F32:
      return dequantize_f32(src, dst, blocks);
    case GgmlType::F16:
      return dequantize_f16(src, dst, blocks);
    case GgmlType::BF16:
      return dequantize_bf16(src, dst, blocks);
    case GgmlType::Q4_0:
      return dequantize_q4_0(src, dst, blocks);
    case GgmlType::Q4_1:
      return dequantize_q4_1(src, dst, blocks);
    case GgmlType::Q5_0:
      return dequantize_q5_0(src, dst, blocks);
    case GgmlType::Q5_1:
      return dequantize_q5_1(src, dst, blocks);
    case GgmlType::Q8_0:
      return dequantize_q8_0(src, dst, blocks);
    case GgmlType::Q2_K:
      return dequantize_q2_k(src, dst, blocks);
    case GgmlType::Q3_K:
      return dequantize_q3_k(src, dst, blocks);
    case GgmlType::Q4_K:
      return dequantize_q4_k(src, dst, blocks);
    case GgmlType::Q5_K:
      return dequantize_q5_k(src, dst, blocks);
    case GgmlType::Q6_K:
      return dequantize_q6_k(src, dst, blocks);
    case GgmlType::MXFP4:
      return dequantize_mxfp4(src, dst, blocks);
  }
}

}  // namespace kiln::quant
