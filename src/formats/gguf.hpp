// GGUF reading (GGUF spec: docs/gguf.md in ggml-org/ggml, "File Structure"). Versions 2 and 3,
// little-endian. The layout, all integers little-endian:
//   header: uint32 magic "GGUF", uint32 version, uint64 tensor_count, uint64 metadata_kv_count
//   metadata_kv_count × { gguf_string key, uint32 value_type, value }
//   tensor_count × { gguf_string name, uint32 n_dimensions, uint64 dimensions[n], uint32 type,
//                    uint64 offset }
//   padding to general.alignment (default 32), then the tensor data; each offset is relative to
//   the data start and a multiple of the alignment.
// gguf_string = uint64 length + that many UTF-8 bytes (no terminator); an array value is uint32
// element type + uint64 count + the elements, which may themselves be arrays.
//
// Every count, length and offset is checked against the bytes that really remain before it is
// used: nothing is allocated or read on the strength of an unchecked claim. Tensor data stays in
// the read-only mapping; GgufTensor::data points into it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "formats/quant/ggml_type.hpp"

namespace kiln {

class MappedFile;

// docs/gguf.md "File Structure": enum gguf_metadata_value_type.
enum class GgufValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

const char* gguf_value_type_name(GgufValueType type);

struct GgufValue;

struct GgufArray {
  GgufValueType element_type = GgufValueType::UINT8;
  std::vector<GgufValue> items;
};

// One metadata value. Unsigned integers are held as uint64_t, signed ones as int64_t, FLOAT32 and
// FLOAT64 as double; `type` keeps the stored type.
struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> value;

  // The value as an integer, for any integer type; nullopt for other types or an unsigned value
  // above INT64_MAX.
  std::optional<int64_t> as_integer() const;
  // The value as a number, for any integer or float type.
  std::optional<double> as_number() const;
  const std::string* as_string() const;
  const GgufArray* as_array() const;
};

struct GgufTensor {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the contiguous (innermost) dimension
  quant::GgmlType type = quant::GgmlType::F32;
  uint64_t offset = 0;  // from the data section start
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  int64_t numel() const;
};

class GgufFile {
 public:
  // Maps and parses `path`. Throws kiln::Error: KILN_ERR_NOT_FOUND / KILN_ERR_IO (the file),
  // KILN_ERR_FORMAT (bad magic, truncation, a count or length past the end, bad alignment, a
  // tensor out of bounds / misaligned / overlapping / with a shape that is not whole blocks,
  // duplicate keys or tensor names, a value of the wrong type for a key the spec defines),
  // KILN_ERR_UNSUPPORTED (a version other than 2 and 3, big-endian files, a tensor type kiln does
  // not read, naming type and tensor).
  static std::unique_ptr<GgufFile> open(const std::filesystem::path& path);
  // Parses bytes the caller keeps alive for the GgufFile's lifetime (used by the fuzzer).
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, size_t size,
                                         const std::string& origin);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::string& origin() const { return origin_; }  // the path, for messages

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;

  // Typed metadata access. nullopt / nullptr when the key is absent; KILN_ERR_FORMAT naming the
  // key, the expected and the stored type when it holds something else.
  std::optional<int64_t> get_integer(const std::string& key) const;
  std::optional<double> get_number(const std::string& key) const;
  std::optional<bool> get_bool(const std::string& key) const;
  std::optional<std::string> get_string(const std::string& key) const;
  const GgufArray* get_array(const std::string& key) const;

  // In file order.
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;

 private:
  GgufFile() = default;
  void parse_all(const uint8_t* data, size_t size);

  std::string origin_;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace kiln
