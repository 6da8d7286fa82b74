// Writing .safetensors files (format: https://github.com/huggingface/safetensors#format): 8-byte
// little-endian header size N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]},
// "__metadata__": {"format": "pt"}} padded with spaces so the data starts 8-byte aligned, then
// the tensors back to back in name order (offsets relative to the data start).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/dtype.hpp"

namespace kiln {

struct SafetensorsTensorOut {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;  // prod(shape) float32 values, converted to the file's dtype
};

// Writes every tensor as `dtype` (F32, or BF16 rounded to nearest even), atomically
// (util/atomic_file.hpp). Throws kiln::Error: KILN_ERR_INVALID_ARGUMENT (duplicate or empty name,
// non-positive dimension, null data, F16 asked for), KILN_ERR_NOT_FOUND / KILN_ERR_IO naming the
// file.
void write_safetensors(const std::filesystem::path& path,
                       const std::vector<SafetensorsTensorOut>& tensors, DType dtype);

}  // namespace kiln
