// A minimal GGUF writer for the GGUF tests, written from the spec (docs/gguf.md "File Structure"),
// independent of kiln's reader: header, metadata pairs, tensor infos, padding, data. Raw-value
// helpers let a test write anything, including what the spec forbids.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace kiln::test {

class GgufWriter {
 public:
  // Little-endian encoders of GGUF primitives.
  template <typename T>
  static std::string pod(T v) {
    std::string s(sizeof(T), '\0');
    std::memcpy(s.data(), &v, sizeof(T));
    return s;
  }
  static std::string str(const std::string& s) { return pod<uint64_t>(s.size()) + s; }
  // An array value (without the leading value type): element type, count, encoded elements.
  static std::string array(uint32_t element_type, const std::vector<std::string>& encoded) {
    std::string s = pod<uint32_t>(element_type) + pod<uint64_t>(encoded.size());
    for (const auto& e : encoded) s += e;
    return s;
  }

  // A metadata pair with an already encoded value.
  void kv(const std::string& key, uint32_t type, const std::string& encoded_value) {
    kvs_ += str(key) + pod<uint32_t>(type) + encoded_value;
    ++n_kv_;
  }
  void kv_u32(const std::string& key, uint32_t v) { kv(key, 4, pod(v)); }
  void kv_f32(const std::string& key, float v) { kv(key, 6, pod(v)); }
  void kv_bool(const std::string& key, bool v) { kv(key, 7, pod<uint8_t>(v ? 1 : 0)); }
  void kv_str(const std::string& key, const std::string& v) { kv(key, 8, str(v)); }
  void kv_strings(const std::string& key, const std::vector<std::string>& v) {
    std::vector<std::string> enc;
    for (const auto& s : v) enc.push_back(str(s));
    kv(key, 9, array(8, enc));
  }
  void kv_i32s(const std::string& key, const std::vector<int32_t>& v) {
    std::vector<std::string> enc;
    for (int32_t x : v) enc.push_back(pod(x));
    kv(key, 9, array(5, enc));
  }

  // A tensor; its data is placed at the next aligned offset unless `offset` is given.
  void tensor(const std::string& name, const std::vector<uint64_t>& dims, uint32_t type,
              const std::string& data, int64_t offset = -1) {
    const uint64_t off = offset >= 0 ? static_cast<uint64_t>(offset) : aligned(data_.size());
    if (offset < 0) {
      data_.resize(static_cast<size_t>(off), '\0');
      data_ += data;
    }
    infos_ += str(name) + pod<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) infos_ += pod(d);
    infos_ += pod(type) + pod(off);
    ++n_tensors_;
  }

  std::string build() const {
    std::string out = "GGUF" + pod(version) + pod(n_tensors_) + pod(n_kv_) + kvs_ + infos_;
    out.resize(static_cast<size_t>(aligned(out.size())), '\0');
    return out + data_;
  }

  uint32_t version = 3;
  uint64_t alignment = 32;

 private:
  uint64_t aligned(uint64_t n) const { return (n + alignment - 1) / alignment * alignment; }
  std::string kvs_, infos_, data_;
  uint64_t n_kv_ = 0, n_tensors_ = 0;
};

}  // namespace kiln::test
