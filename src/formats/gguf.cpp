// GgufFile: parses and validates a GGUF v2/v3 file (docs/gguf.md, "File Structure"). A Cursor
// reads the header sections in order and refuses any read past the end; every count is capped by
// what the remaining bytes could hold before anything is allocated for it.
#include "formats/gguf.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "core/error.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

static_assert(std::endian::native == std::endian::little,
              "GGUF data is little-endian; the reader maps it without byte swapping");

namespace {

constexpr uint32_t kMagic = 0x46554747;     // "GGUF" read as a little-endian uint32
constexpr uint64_t kDefaultAlignment = 32;  // docs/gguf.md: general.alignment, default 32
// docs/gguf.md "Standardized key-value pairs": keys are at most 2^16 - 1 bytes; tensor names at
// most 64 bytes; n_dimensions at most 4 (GGML_MAX_DIMS).
constexpr uint64_t kMaxKeyBytes = 65535;
constexpr uint64_t kMaxTensorNameBytes = 64;
constexpr uint32_t kMaxDims = 4;
// Nested arrays: each level costs at least 12 bytes (uint32 type + uint64 count), which caps the
// depth by the file size; the fixed cap bounds the recursion for any file.
constexpr int kMaxArrayDepth = 16;

// Smallest encoding of one item of each type: what a claimed count must be able to fit.
uint64_t min_encoded_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
    case GgufValueType::INT8:
    case GgufValueType::BOOL:
      return 1;
    case GgufValueType::UINT16:
    case GgufValueType::INT16:
      return 2;
    case GgufValueType::UINT32:
    case GgufValueType::INT32:
    case GgufValueType::FLOAT32:
      return 4;
    case GgufValueType::UINT64:
    case GgufValueType::INT64:
    case GgufValueType::FLOAT64:
    case GgufValueType::STRING:
      return 8;
    case GgufValueType::ARRAY:
      return 12;
  }
  return 1;
}

bool known_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::FLOAT64); }

class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& origin)
      : data_(data), size_(size), origin_(origin) {}

  size_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  [[noreturn]] void truncated(const std::string& what, uint64_t need) const {
    fail(KILN_ERR_FORMAT, origin_ + ": truncated: " + what + " needs " + std::to_string(need) +
                              " bytes at offset " + std::to_string(pos_) + ", but the file has " +
                              std::to_string(remaining()) + " left (file size " +
                              std::to_string(size_) + ")");
  }

  const uint8_t* take(uint64_t n, const std::string& what) {
    if (n > remaining()) truncated(what, n);
    const uint8_t* p = data_ + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }

  template <typename T>
  T read(const std::string& what) {
    T v;
    std::memcpy(&v, take(sizeof(T), what), sizeof(T));
    return v;
  }

  // A gguf_string; `max_len` further caps the length the spec allows for this field.
  std::string read_string(const std::string& what, uint64_t max_len) {
    const uint64_t len = read<uint64_t>(what + " length");
    if (len > remaining()) {
      fail(KILN_ERR_FORMAT, origin_ + ": " + what + " claims " + std::to_string(len) +
                                " bytes at offset " + std::to_string(pos_) +
                                ", past the end of "
                                "the file (" +
                                std::to_string(remaining()) + " bytes left)");
    }
    if (len > max_len) {
      fail(KILN_ERR_FORMAT, origin_ + ": " + what + " is " + std::to_string(len) +
                                " bytes long; the GGUF spec allows at most " +
                                std::to_string(max_len));
    }
    const uint8_t* p = take(len, what);
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
  }

  // A count of items each at least `min_item` bytes long, checked against the remaining bytes.
  uint64_t read_count(const std::string& what, uint64_t min_item) {
    const uint64_t count = read<uint64_t>(what);
    if (count > remaining() / min_item) {
      fail(KILN_ERR_FORMAT, origin_ + ": " + what + " is " + std::to_string(count) + ", but the " +
                                std::to_string(remaining()) +
                                " bytes left in the file hold at most " +
                                std::to_string(remaining() / min_item) + " (" +
                                std::to_string(min_item) + " bytes each at least)");
    }
    return count;
  }

  GgufValue read_value(GgufValueType type, const std::string& what, int depth) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufValueType::UINT8:
        v.value = uint64_t{read<uint8_t>(what)};
        break;
      case GgufValueType::INT8:
        v.value = int64_t{read<int8_t>(what)};
        break;
      case GgufValueType::UINT16:
        v.value = uint64_t{read<uint16_t>(what)};
        break;
      case GgufValueType::INT16:
        v.value = int64_t{read<int16_t>(what)};
        break;
      case GgufValueType::UINT32:
        v.value = uint64_t{read<uint32_t>(what)};
        break;
      case GgufValueType::INT32:
        v.value = int64_t{read<int32_t>(what)};
        break;
      case GgufValueType::UINT64:
        v.value = read<uint64_t>(what);
        break;
      case GgufValueType::INT64:
        v.value = read<int64_t>(what);
        break;
      case GgufValueType::FLOAT32:
        v.value = double{read<float>(what)};
        break;
      case GgufValueType::FLOAT64:
        v.value = read<double>(what);
        break;
      case GgufValueType::BOOL: {
        const uint8_t b = read<uint8_t>(what);
        if (b > 1) {
          fail(KILN_ERR_FORMAT, origin_ + ": " + what + " is a bool stored as " +
                                    std::to_string(b) + ", expected 0 or 1");
        }
        v.value = b == 1;
        break;
      }
      case GgufValueType::STRING:
        v.value = read_string(what, std::numeric_limits<uint64_t>::max());
        break;
      case GgufValueType::ARRAY:
        v.value = read_array(what, depth + 1);
        break;
    }
    return v;
  }

 private:
  GgufArray read_array(const std::string& what, int depth) {
    if (depth > kMaxArrayDepth) {
      fail(KILN_ERR_FORMAT, origin_ + ": " + what + " nests arrays " + std::to_string(depth) +
                                " deep; kiln reads at most " + std::to_string(kMaxArrayDepth));
    }
    const uint32_t raw_type = read<uint32_t>(what + " element type");
    if (!known_value_type(raw_type)) {
      fail(KILN_ERR_FORMAT, origin_ + ": " + what + " has unknown element type " +
                                std::to_string(raw_type) + " (GGUF value types are 0-12)");
    }
    GgufArray a;
    a.element_type = static_cast<GgufValueType>(raw_type);
    const uint64_t count = read_count(what + " element count", min_encoded_size(a.element_type));
    a.items.reserve(static_cast<size_t>(count));
    for (uint64_t i = 0; i < count; ++i) {
      a.items.push_back(read_value(a.element_type, what + "[" + std::to_string(i) + "]", depth));
    }
    return a;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& origin_;
};

bool checked_mul(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

std::string dims_string(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

}  // namespace

const char* gguf_value_type_name(GgufValueType type) {
  switch (type) {
    case GgufValueType::UINT8:
      return "UINT8";
    case GgufValueType::INT8:
      return "INT8";
    case GgufValueType::UINT16:
      return "UINT16";
    case GgufValueType::INT16:
      return "INT16";
    case GgufValueType::UINT32:
      return "UINT32";
    case GgufValueType::INT32:
      return "INT32";
    case GgufValueType::FLOAT32:
      return "FLOAT32";
    case GgufValueType::BOOL:
      return "BOOL";
    case GgufValueType::STRING:
      return "STRING";
    case GgufValueType::ARRAY:
      return "ARRAY";
    case GgufValueType::UINT64:
      return "UINT64";
    case GgufValueType::INT64:
      return "INT64";
    case GgufValueType::FLOAT64:
      return "FLOAT64";
  }
  return "?";
}

std::optional<int64_t> GgufValue::as_integer() const {
  if (const auto* u = std::get_if<uint64_t>(&value)) {
    if (*u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
    return static_cast<int64_t>(*u);
  }
  if (const auto* i = std::get_if<int64_t>(&value)) return *i;
  return std::nullopt;
}

std::optional<double> GgufValue::as_number() const {
  if (const auto* d = std::get_if<double>(&value)) return *d;
  if (const auto* u = std::get_if<uint64_t>(&value)) return static_cast<double>(*u);
  if (const auto* i = std::get_if<int64_t>(&value)) return static_cast<double>(*i);
  return std::nullopt;
}

const std::string* GgufValue::as_string() const { return std::get_if<std::string>(&value); }
const GgufArray* GgufValue::as_array() const { return std::get_if<GgufArray>(&value); }

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

GgufFile::~GgufFile() = default;

std::unique_ptr<GgufFile> GgufFile::open(const std::filesystem::path& path) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->origin_ = path.string();
  f->file_ = MappedFile::open(path);
  f->parse_all(f->file_->data(), f->file_->size());
  return f;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, size_t size,
                                          const std::string& origin) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->origin_ = origin;
  f->parse_all(data, size);
  return f;
}

void GgufFile::parse_all(const uint8_t* data, size_t size) {
  Cursor c(data, size, origin_);

  // Header.
  if (size < 4 || c.read<uint32_t>("magic") != kMagic) {
    std::string got = "a file of " + std::to_string(size) + " bytes";
    if (size >= 4) {
      got = "bytes";
      for (int i = 0; i < 4; ++i) got += " " + std::to_string(data[i]);
    }
    fail(KILN_ERR_FORMAT, origin_ +
                              ": not a GGUF file: expected the magic \"GGUF\" (71 71 85 70), "
                              "got " +
                              got);
  }
  version_ = c.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    const uint32_t swapped = __builtin_bswap32(version_);
    if (swapped == 2 || swapped == 3) {
      fail(KILN_ERR_UNSUPPORTED, origin_ + ": a big-endian GGUF v" + std::to_string(swapped) +
                                     " file; kiln reads little-endian GGUF only");
    }
    fail(version_ == 0 ? KILN_ERR_FORMAT : KILN_ERR_UNSUPPORTED,
         origin_ + ": GGUF version " + std::to_string(version_) +
             " is not supported; kiln reads versions 2 and 3");
  }
  // A tensor info is at least 8 (name length) + 1 (name) + 4 + 8 (one dim) + 4 + 8 bytes; a
  // metadata pair at least 8 + 1 (key) + 4 + 1 bytes.
  const uint64_t n_tensors = c.read_count("tensor_count", 33);
  const uint64_t n_kv = c.read_count("metadata_kv_count", 14);

  // Metadata.
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string what = "metadata key #" + std::to_string(i);
    std::string key = c.read_string(what, kMaxKeyBytes);
    if (key.empty()) fail(KILN_ERR_FORMAT, origin_ + ": " + what + " is empty");
    const uint32_t raw_type = c.read<uint32_t>("type of metadata \"" + key + "\"");
    if (!known_value_type(raw_type)) {
      fail(KILN_ERR_FORMAT, origin_ + ": metadata \"" + key + "\" has unknown value type " +
                                std::to_string(raw_type) + " (GGUF value types are 0-12)");
    }
    GgufValue value =
        c.read_value(static_cast<GgufValueType>(raw_type), "metadata \"" + key + "\"", 0);
    if (metadata_.count(key)) {
      fail(KILN_ERR_FORMAT, origin_ + ": metadata key \"" + key + "\" appears twice");
    }
    metadata_.emplace(std::move(key), std::move(value));
  }

  // docs/gguf.md: general.alignment is a uint32, a multiple of 8 in practice; it must be a
  // non-zero power of two for offsets and padding to make sense.
  alignment_ = kDefaultAlignment;
  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufValueType::UINT32) {
      fail(KILN_ERR_FORMAT, origin_ + ": general.alignment is " + gguf_value_type_name(a->type) +
                                ", expected UINT32");
    }
    alignment_ = std::get<uint64_t>(a->value);
    if (alignment_ == 0 || !std::has_single_bit(alignment_)) {
      fail(KILN_ERR_FORMAT, origin_ + ": general.alignment is " + std::to_string(alignment_) +
                                ", expected a non-zero power of two");
    }
  }

  // Tensor infos.
  tensors_.reserve(static_cast<size_t>(n_tensors));
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = c.read_string("name of tensor #" + std::to_string(i), kMaxTensorNameBytes);
    const std::string what = "tensor " + t.name;
    if (t.name.empty())
      fail(KILN_ERR_FORMAT, origin_ + ": tensor #" + std::to_string(i) + " has an empty name");
    const uint32_t n_dims = c.read<uint32_t>(what + " n_dimensions");
    if (n_dims < 1 || n_dims > kMaxDims) {
      fail(KILN_ERR_FORMAT, origin_ + ": " + what + " has " + std::to_string(n_dims) +
                                " dimensions, expected 1 to " + std::to_string(kMaxDims));
    }
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = c.read<uint64_t>(what + " dimension " + std::to_string(d));
      if (dim == 0 || !checked_mul(numel, dim, numel) ||
          numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        fail(KILN_ERR_FORMAT, origin_ + ": " + what + " dimension " + std::to_string(d) + " is " +
                                  std::to_string(dim) +
                                  (dim == 0 ? ", expected >= 1" : ": the element count overflows"));
      }
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    const uint32_t raw_type = c.read<uint32_t>(what + " type");
    const quant::GgmlTypeInfo* info = quant::find_ggml_type(raw_type);
    if (info == nullptr) {
      fail(KILN_ERR_UNSUPPORTED, origin_ + ": " + what + " has tensor type " +
                                     quant::ggml_type_name(raw_type) + " (id " +
                                     std::to_string(raw_type) +
                                     "), which kiln does not read; supported: f32, f16, bf16, "
                                     "q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q3_K, q4_K, q5_K, q6_K, "
                                     "mxfp4");
    }
    t.type = info->type;
    if (t.dims[0] % info->block_size != 0) {
      fail(KILN_ERR_FORMAT, origin_ + ": " + what + " of type " + info->name + " has shape " +
                                dims_string(t.dims) +
                                ": its first dimension is not a multiple "
                                "of the block size " +
                                std::to_string(info->block_size));
    }
    uint64_t nbytes = 0;
    if (!checked_mul(numel / static_cast<uint64_t>(info->block_size), info->block_bytes, nbytes)) {
      fail(KILN_ERR_FORMAT, origin_ + ": " + what + " byte size overflows");
    }
    t.nbytes = static_cast<size_t>(nbytes);
    t.offset = c.read<uint64_t>(what + " offset");
    if (t.offset % alignment_ != 0) {
      fail(KILN_ERR_FORMAT, origin_ + ": " + what + " offset " + std::to_string(t.offset) +
                                " is not a multiple of the alignment " +
                                std::to_string(alignment_));
    }
    if (tensor_index_.count(t.name)) {
      fail(KILN_ERR_FORMAT, origin_ + ": tensor name " + t.name + " appears twice");
    }
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // Tensor data: starts at the next multiple of the alignment after the tensor infos.
  const uint64_t header_end = c.pos();
  const uint64_t data_start = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_start > size) {
    fail(KILN_ERR_FORMAT, origin_ + ": truncated: the tensor data should start at offset " +
                              std::to_string(data_start) + ", past the end of the file (" +
                              std::to_string(size) + " bytes)");
  }
  const uint64_t data_size = data_start <= size ? size - data_start : 0;
  for (GgufTensor& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      fail(KILN_ERR_FORMAT, origin_ + ": tensor " + t.name + " data [" + std::to_string(t.offset) +
                                ", " + std::to_string(t.offset + t.nbytes) +
                                ") of the data section lies outside it (" +
                                std::to_string(data_size) + " bytes, from file offset " +
                                std::to_string(data_start) + ")");
    }
    t.data = data + data_start + t.offset;
  }
  std::vector<const GgufTensor*> by_offset;
  for (const GgufTensor& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensor& prev = *by_offset[i - 1];
    if (prev.offset + prev.nbytes > by_offset[i]->offset) {
      fail(KILN_ERR_FORMAT, origin_ + ": tensors " + prev.name + " and " + by_offset[i]->name +
                                " overlap in the data section");
    }
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

[[noreturn]] void wrong_type(const std::string& origin, const std::string& key,
                             const char* expected, GgufValueType got) {
  fail(KILN_ERR_FORMAT, origin + ": metadata \"" + key + "\" is " + gguf_value_type_name(got) +
                            ", expected " + expected);
}

}  // namespace

std::optional<int64_t> GgufFile::get_integer(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  const auto i = v->as_integer();
  if (!i) wrong_type(origin_, key, "an integer (below 2^63)", v->type);
  return i;
}

std::optional<double> GgufFile::get_number(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  const auto d = v->as_number();
  if (!d) wrong_type(origin_, key, "a number", v->type);
  return d;
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (const auto* b = std::get_if<bool>(&v->value)) return *b;
  wrong_type(origin_, key, "BOOL", v->type);
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (const auto* s = v->as_string()) return *s;
  wrong_type(origin_, key, "STRING", v->type);
}

const GgufArray* GgufFile::get_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return nullptr;
  if (const auto* a = v->as_array()) return a;
  wrong_type(origin_, key, "ARRAY", v->type);
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace kiln
