// SafetensorsFile: parses and validates one .safetensors file (format reference:
// https://github.com/huggingface/safetensors#format). Nothing in the data buffer is read here;
// every claim the header makes is checked against the real file size first.
#include "formats/safetensors.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "core/error.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

namespace {

using nlohmann::json;

// The safetensors reference implementation refuses headers above 100 MB (MAX_HEADER_SIZE); a
// larger length is a corrupt prefix, not a real header.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Byte size of each safetensors dtype with a whole-byte element (F4 / F6_* are sub-byte: their
// byte count is not checked). nullopt: unknown to this table.
std::optional<uint64_t> safetensors_dtype_size(const std::string& dtype) {
  static const std::pair<const char*, uint64_t> kSizes[] = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8}, {"F64", 8},     {"C64", 8}};
  for (const auto& [name, size] : kSizes) {
    if (dtype == name) return size;
  }
  return std::nullopt;
}

std::optional<DType> kiln_dtype(const std::string& dtype) {
  if (dtype == "F32") return DType::F32;
  if (dtype == "F16") return DType::F16;
  if (dtype == "BF16") return DType::BF16;
  return std::nullopt;
}

uint64_t read_le_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += "]";
  return s;
}

// One header entry after its fields were type-checked; offsets are relative to the data buffer.
struct HeaderEntry {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

class HeaderValidator {
 public:
  HeaderValidator(std::string file, uint64_t buffer_size)
      : file_(std::move(file)), buffer_size_(buffer_size) {}

  HeaderEntry entry(const std::string& name, const json& value) const {
    if (!value.is_object()) lie(name, "entry is " + type_of(value) + ", expected an object");
    HeaderEntry e;
    e.name = name;
    e.dtype = string_field(name, value, "dtype");
    e.shape = shape_field(name, value);
    read_offsets(name, value, e);
    check_byte_count(e);
    return e;
  }

  // Tensors may leave gaps in the buffer but may not share bytes (spec: "the byte buffer ... cannot
  // contain holes" is not enforced; overlap is what would make two tensors alias).
  void check_no_overlap(std::vector<const HeaderEntry*> entries) const {
    std::sort(entries.begin(), entries.end(),
              [](const HeaderEntry* a, const HeaderEntry* b) { return a->begin < b->begin; });
    const HeaderEntry* previous = nullptr;
    for (const HeaderEntry* e : entries) {
      if (e->begin == e->end) continue;  // empty tensors own no bytes
      if (previous != nullptr && e->begin < previous->end) {
        fail(KILN_ERR_FORMAT, file_ + ": tensor " + e->name + " (bytes " + range(*e) +
                                  ") overlaps tensor " + previous->name + " (bytes " +
                                  range(*previous) + ")");
      }
      previous = e;
    }
  }

 private:
  [[noreturn]] void lie(const std::string& tensor, const std::string& what) const {
    fail(KILN_ERR_FORMAT, file_ + ": tensor " + tensor + ": " + what);
  }

  static std::string type_of(const json& v) { return std::string("a JSON ") + v.type_name(); }
  static std::string range(const HeaderEntry& e) {
    // Appended piecewise: GCC 12's -Wrestrict misfires on `"[" + std::to_string(...)`.
    std::string s = "[";
    s += std::to_string(e.begin);
    s += ", ";
    s += std::to_string(e.end);
    s += ")";
    return s;
  }

  const json& field(const std::string& tensor, const json& obj, const char* key) const {
    auto it = obj.find(key);
    if (it == obj.end()) lie(tensor, std::string("missing field '") + key + "'");
    return *it;
  }

  std::string string_field(const std::string& tensor, const json& obj, const char* key) const {
    const json& v = field(tensor, obj, key);
    if (!v.is_string()) lie(tensor, std::string(key) + " is " + type_of(v) + ", expected a string");
    return v.get<std::string>();
  }

  uint64_t non_negative(const std::string& tensor, const json& v, const std::string& what) const {
    if (!v.is_number_unsigned()) {
      lie(tensor, what + " is " + v.dump() + ", expected a non-negative integer");
    }
    return v.get<uint64_t>();
  }

  std::vector<int64_t> shape_field(const std::string& tensor, const json& obj) const {
    const json& v = field(tensor, obj, "shape");
    if (!v.is_array()) lie(tensor, "shape is " + type_of(v) + ", expected an array");
    std::vector<int64_t> shape;
    for (size_t i = 0; i < v.size(); ++i) {
      const uint64_t dim = non_negative(tensor, v[i], "shape[" + std::to_string(i) + "]");
      if (dim > static_cast<uint64_t>(INT64_MAX)) lie(tensor, "shape dimension too large");
      shape.push_back(static_cast<int64_t>(dim));
    }
    return shape;
  }

  void read_offsets(const std::string& tensor, const json& obj, HeaderEntry& e) const {
    const json& v = field(tensor, obj, "data_offsets");
    if (!v.is_array() || v.size() != 2) {
      lie(tensor, "data_offsets is " + v.dump() + ", expected [begin, end]");
    }
    e.begin = non_negative(tensor, v[0], "data_offsets[0]");
    e.end = non_negative(tensor, v[1], "data_offsets[1]");
    if (e.end < e.begin) lie(tensor, "data_offsets " + range(e) + " end before begin");
    if (e.end > buffer_size_) {
      lie(tensor, "data_offsets " + range(e) + " run past the data buffer of " +
                      std::to_string(buffer_size_) + " bytes (file truncated?)");
    }
  }

  void check_byte_count(const HeaderEntry& e) const {
    const auto elem = safetensors_dtype_size(e.dtype);
    if (!elem) return;  // sub-byte or unknown dtype: reported as unsupported when requested
    uint64_t expected = *elem;
    for (int64_t d : e.shape) {
      if (__builtin_mul_overflow(expected, static_cast<uint64_t>(d), &expected)) {
        lie(e.name, "shape " + shape_string(e.shape) + " of " + e.dtype + " overflows 64 bits");
      }
    }
    if (expected != e.end - e.begin) {
      lie(e.name, "data_offsets " + range(e) + " hold " + std::to_string(e.end - e.begin) +
                      " bytes, but shape " + shape_string(e.shape) + " of " + e.dtype + " needs " +
                      std::to_string(expected));
    }
  }

  std::string file_;
  uint64_t buffer_size_;
};

// Parses the header JSON, rejecting duplicate top-level names (nlohmann would silently keep the
// last one, and which tensor a name means must never be ambiguous).
json parse_header(const std::string& file, const char* begin, const char* end) {
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && duplicate.empty() &&
        !seen.insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  json header;
  try {
    header = json::parse(begin, end, on_event);
  } catch (const json::exception& e) {
    fail(KILN_ERR_FORMAT, file + ": header is not valid JSON: " + e.what());
  }
  if (!duplicate.empty()) fail(KILN_ERR_FORMAT, file + ": tensor " + duplicate + " appears twice");
  if (!header.is_object()) {
    fail(KILN_ERR_FORMAT,
         file + ": header is a JSON " + std::string(header.type_name()) + ", expected an object");
  }
  return header;
}

}  // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

size_t TensorView::byte_offset(int64_t elements) const {
  if (dtype != DType::GGML) return static_cast<size_t>(elements) * dtype_size(dtype);
  const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(ggml_type));
  return static_cast<size_t>(elements / info->block_size) * info->block_bytes;
}

SafetensorsFile::~SafetensorsFile() = default;

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  std::unique_ptr<SafetensorsFile> st(new SafetensorsFile());
  st->path_ = path;
  st->file_ = MappedFile::open(path);
  const std::string where = path.string();
  const uint64_t size = st->file_->size();
  const uint8_t* bytes = st->file_->data();

  // Layout: u64 little-endian N | N bytes of JSON header | data buffer.
  if (size < 8) {
    fail(KILN_ERR_FORMAT, where + ": file is " + std::to_string(size) +
                              " bytes, too short for the 8-byte header length");
  }
  const uint64_t header_len = read_le_u64(bytes);
  if (header_len > kMaxHeaderBytes) {
    fail(KILN_ERR_FORMAT, where + ": header length " + std::to_string(header_len) +
                              " is larger than the 100 MB limit (corrupt length prefix)");
  }
  if (header_len > size - 8) {
    fail(KILN_ERR_FORMAT, where + ": header length " + std::to_string(header_len) +
                              " exceeds the " + std::to_string(size - 8) +
                              " bytes after the length prefix (file truncated?)");
  }
  const char* header_begin = reinterpret_cast<const char*>(bytes + 8);
  const json header = parse_header(where, header_begin, header_begin + header_len);

  const uint64_t buffer_size = size - 8 - header_len;
  const uint8_t* buffer = bytes + 8 + header_len;
  HeaderValidator validator(where, buffer_size);
  std::vector<HeaderEntry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") continue;  // free-form string map, nothing to validate against
    entries.push_back(validator.entry(name, value));
  }
  std::vector<const HeaderEntry*> pointers;
  for (const auto& e : entries) pointers.push_back(&e);
  validator.check_no_overlap(pointers);

  const std::string file_name = path.filename().string();
  for (const auto& e : entries) {
    const auto dtype = kiln_dtype(e.dtype);
    if (!dtype) {
      st->unsupported_.emplace(e.name, e.dtype);
      continue;
    }
    TensorView view;
    view.name = e.name;
    view.dtype = *dtype;
    view.shape = e.shape;
    view.data = buffer + e.begin;
    view.nbytes = static_cast<size_t>(e.end - e.begin);
    view.file = file_name;
    st->tensors_.emplace(e.name, std::move(view));
  }
  return st;
}

}  // namespace kiln
