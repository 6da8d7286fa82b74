// The ggml tensor types a GGUF file may name (enum ggml_type in ggml/include/ggml.h; the GGUF spec,
// docs/gguf.md "File Structure", stores it as the uint32 `type` of each tensor info), which of
// them kiln reads, and their block geometry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kiln::quant {

// The ids kiln can dequantise. Other ids (Q8_1, Q8_K, IQ*, TQ*, integer types) are refused with
// KILN_ERR_UNSUPPORTED when a file is opened.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
  MXFP4 = 39,
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;    // as ggml names it ("q4_K")
  int64_t block_size;  // elements per block (1 for plain floats)
  size_t block_bytes;  // bytes per block
};

// nullptr when kiln does not read `id`.
const GgmlTypeInfo* find_ggml_type(uint32_t id);
// ggml's name for any type id it has defined ("iq2_xs"), or "type <id>" when unknown.
std::string ggml_type_name(uint32_t id);

// Converts n elements (a multiple of the type's block size) stored at `src` (any alignment) to
// float32 as ggml's dequantize_row_* does (MXFP4 code 8 gives -0 per the MX spec, ggml +0): every
// result is the correctly rounded value
// of the format's definition.
void dequantize(GgmlType type, const uint8_t* src, float* dst, int64_t n);

}  // namespace kiln::quant
