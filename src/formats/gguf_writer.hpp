// GGUF writing (GGUF spec, docs/gguf.md "File Structure", version 3, little-endian): header,
// metadata pairs in the order given, tensor infos, padding to `general.alignment`, then each
// tensor's data at an aligned offset. The file is produced atomically (util/atomic_file.hpp): a
// crash or an error never leaves a partial file under the destination name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.hpp"
#include "formats/gguf.hpp"

namespace kiln {

// One metadata pair; values use the reader's representation (GgufValue keeps its stored type).
using GgufMetadata = std::vector<std::pair<std::string, GgufValue>>;

GgufValue gguf_string(std::string s);
GgufValue gguf_u32(uint32_t v);
GgufValue gguf_i32(int32_t v);
GgufValue gguf_f32(float v);
GgufValue gguf_bool(bool v);
GgufValue gguf_strings(const std::vector<std::string>& v);
GgufValue gguf_i32s(const std::vector<int32_t>& v);
GgufValue gguf_f32s(const std::vector<float>& v);

struct GgufTensorPlan {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] innermost
  quant::GgmlType type = quant::GgmlType::F32;
};

// Fills `out` with tensor `index`'s bytes (exactly its size for its type and dims).
using GgufTensorProducer = std::function<void(size_t index, std::vector<uint8_t>& out)>;

// Writes `dst`. `general.alignment` is taken from `metadata` when present (a power of two), else
// 32 and not written. Throws KILN_ERR_NOT_FOUND (the directory does not exist), KILN_ERR_IO naming
// the path and the OS reason (not writable, disk full, a directory in the way), KILN_ERR_CANCELLED
// when `progress` returns false, KILN_ERR_INTERNAL when a producer returns the wrong number of
// bytes; the destination is then untouched.
void write_gguf(const std::filesystem::path& dst, const GgufMetadata& metadata,
                const std::vector<GgufTensorPlan>& tensors, const GgufTensorProducer& produce,
                const ProgressFn& progress);

}  // namespace kiln
