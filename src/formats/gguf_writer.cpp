#include "formats/gguf_writer.hpp"

#include <cstring>

#include "core/error.hpp"
#include "util/atomic_file.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kGgufVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;

template <typename T>
void put(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // little-endian hosts only (as the reader)
  out.append(bytes, sizeof(T));
}

void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}

void put_value(std::string& out, const GgufValue& v, const std::string& key) {
  const auto bad = [&] {
    fail(KILN_ERR_INTERNAL, "GGUF metadata \"" + key + "\": value does not match its type " +
                                gguf_value_type_name(v.type));
  };
  switch (v.type) {
    case GgufValueType::UINT8:
    case GgufValueType::UINT16:
    case GgufValueType::UINT32:
    case GgufValueType::UINT64: {
      const auto* u = std::get_if<uint64_t>(&v.value);
      if (!u) bad();
      if (v.type == GgufValueType::UINT8) put<uint8_t>(out, static_cast<uint8_t>(*u));
      if (v.type == GgufValueType::UINT16) put<uint16_t>(out, static_cast<uint16_t>(*u));
      if (v.type == GgufValueType::UINT32) put<uint32_t>(out, static_cast<uint32_t>(*u));
      if (v.type == GgufValueType::UINT64) put<uint64_t>(out, *u);
      return;
    }
    case GgufValueType::INT8:
    case GgufValueType::INT16:
    case GgufValueType::INT32:
    case GgufValueType::INT64: {
      const auto* i = std::get_if<int64_t>(&v.value);
      if (!i) bad();
      if (v.type == GgufValueType::INT8) put<int8_t>(out, static_cast<int8_t>(*i));
      if (v.type == GgufValueType::INT16) put<int16_t>(out, static_cast<int16_t>(*i));
      if (v.type == GgufValueType::INT32) put<int32_t>(out, static_cast<int32_t>(*i));
      if (v.type == GgufValueType::INT64) put<int64_t>(out, *i);
      return;
    }
    case GgufValueType::FLOAT32:
    case GgufValueType::FLOAT64: {
      const auto* d = std::get_if<double>(&v.value);
      if (!d) bad();
      if (v.type == GgufValueType::FLOAT32) put<float>(out, static_cast<float>(*d));
      if (v.type == GgufValueType::FLOAT64) put<double>(out, *d);
      return;
    }
    case GgufValueType::BOOL: {
      const auto* b = std::get_if<bool>(&v.value);
      if (!b) bad();
      put<uint8_t>(out, *b ? 1 : 0);
      return;
    }
    case GgufValueType::STRING: {
      const auto* s = std::get_if<std::string>(&v.value);
      if (!s) bad();
      put_string(out, *s);
      return;
    }
    case GgufValueType::ARRAY: {
      const auto* a = std::get_if<GgufArray>(&v.value);
      if (!a) bad();
      put<uint32_t>(out, static_cast<uint32_t>(a->element_type));
      put<uint64_t>(out, a->items.size());
      for (const GgufValue& item : a->items) {
        if (item.type != a->element_type) bad();
        put_value(out, item, key);
      }
      return;
    }
  }
  bad();
}

uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

}  // namespace

GgufValue gguf_string(std::string s) { return {GgufValueType::STRING, std::move(s)}; }
GgufValue gguf_u32(uint32_t v) { return {GgufValueType::UINT32, uint64_t{v}}; }
GgufValue gguf_i32(int32_t v) { return {GgufValueType::INT32, int64_t{v}}; }
GgufValue gguf_f32(float v) { return {GgufValueType::FLOAT32, static_cast<double>(v)}; }
GgufValue gguf_bool(bool v) { return {GgufValueType::BOOL, v}; }

GgufValue gguf_strings(const std::vector<std::string>& v) {
  GgufArray a{GgufValueType::STRING, {}};
  a.items.reserve(v.size());
  for (const auto& s : v) a.items.push_back(gguf_string(s));
  return {GgufValueType::ARRAY, std::move(a)};
}

GgufValue gguf_i32s(const std::vector<int32_t>& v) {
  GgufArray a{GgufValueType::INT32, {}};
  for (int32_t x : v) a.items.push_back(gguf_i32(x));
  return {GgufValueType::ARRAY, std::move(a)};
}

GgufValue gguf_f32s(const std::vector<float>& v) {
  GgufArray a{GgufValueType::FLOAT32, {}};
  for (float x : v) a.items.push_back(gguf_f32(x));
  return {GgufValueType::ARRAY, std::move(a)};
}

void write_gguf(const fs::path& dst, const GgufMetadata& metadata,
                const std::vector<GgufTensorPlan>& tensors, const GgufTensorProducer& produce,
                const ProgressFn& progress) {
  uint64_t alignment = kDefaultAlignment;
  std::string header;
  put<uint32_t>(header, 0x46554747u);  // "GGUF"
  put<uint32_t>(header, kGgufVersion);
  put<uint64_t>(header, tensors.size());
  put<uint64_t>(header, metadata.size());
  for (const auto& [key, value] : metadata) {
    if (key == "general.alignment") {
      const auto a = value.as_integer();
      if (!a || *a <= 0 || (*a & (*a - 1)) != 0) {
        fail(KILN_ERR_INTERNAL, "general.alignment must be a power of two");
      }
      alignment = static_cast<uint64_t>(*a);
    }
    put_string(header, key);
    put<uint32_t>(header, static_cast<uint32_t>(value.type));
    put_value(header, value, key);
  }
  std::vector<uint64_t> sizes;
  uint64_t offset = 0;
  for (const GgufTensorPlan& t : tensors) {
    const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(t.type));
    int64_t n = 1;
    for (int64_t d : t.dims) n *= d;
    if (info == nullptr || t.dims.empty() || t.dims[0] % info->block_size != 0) {
      fail(KILN_ERR_INTERNAL, "GGUF tensor " + t.name + ": rows are not whole blocks of " +
                                  quant::ggml_type_name(static_cast<uint32_t>(t.type)));
    }
    sizes.push_back(static_cast<uint64_t>(n / info->block_size) * info->block_bytes);
    offset = align_up(offset, alignment);
    put_string(header, t.name);
    put<uint32_t>(header, static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) put<uint64_t>(header, static_cast<uint64_t>(d));
    put<uint32_t>(header, static_cast<uint32_t>(t.type));
    put<uint64_t>(header, offset);
    offset += sizes.back();
  }
  header.resize(align_up(header.size(), alignment), '\0');

  AtomicFileWriter file(dst);
  file.write(header.data(), header.size());
  const uint64_t data_start = file.position();
  std::vector<uint8_t> data;
  for (size_t i = 0; i < tensors.size(); ++i) {
    file.pad_to(data_start + align_up(file.position() - data_start, alignment));
    data.clear();
    produce(i, data);
    if (data.size() != sizes[i]) {
      fail(KILN_ERR_INTERNAL, "GGUF tensor " + tensors[i].name + ": produced " +
                                  std::to_string(data.size()) + " bytes, expected " +
                                  std::to_string(sizes[i]));
    }
    file.write(data.data(), data.size());
    if (progress &&
        !progress(static_cast<float>(i + 1) / static_cast<float>(tensors.size()), "writing")) {
      fail(KILN_ERR_CANCELLED, "writing " + dst.string() + " cancelled by the progress callback");
    }
  }
  file.commit();
}

}  // namespace kiln
