#include "formats/safetensors_writer.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "util/atomic_file.hpp"

namespace kiln {

namespace {

// Values converted per chunk so a large tensor needs no second full-size copy.
constexpr size_t kChunk = 1 << 16;

}  // namespace

void write_safetensors(const std::filesystem::path& path,
                       const std::vector<SafetensorsTensorOut>& tensors, DType dtype) {
  const auto bad = [&](const std::string& what) {
    fail(KILN_ERR_INVALID_ARGUMENT, "cannot write '" + path.string() + "': " + what);
  };
  if (dtype != DType::F32 && dtype != DType::BF16) {
    bad("dtype " + std::string(dtype_name(dtype)) + " is not offered for export (F32 or BF16)");
  }
  std::vector<const SafetensorsTensorOut*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->name < b->name; });

  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::vector<size_t> counts;
  uint64_t offset = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const SafetensorsTensorOut& t = *order[i];
    if (t.name.empty()) bad("a tensor has an empty name");
    if (t.name == "__metadata__") bad("a tensor is named __metadata__");
    if (i > 0 && order[i - 1]->name == t.name) bad("tensor '" + t.name + "' appears twice");
    if (t.data == nullptr) bad("tensor '" + t.name + "' has no data");
    size_t numel = 1;
    for (int64_t d : t.shape) {
      if (d <= 0) bad("tensor '" + t.name + "' has a non-positive dimension");
      numel *= static_cast<size_t>(d);
    }
    const uint64_t nbytes = numel * dtype_size(dtype);
    header[t.name] = {{"dtype", std::string(dtype_name(dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    counts.push_back(numel);
    offset += nbytes;
  }
  std::string text = header.dump();  // nlohmann orders object keys: the header is sorted
  text.resize((text.size() + 7) / 8 * 8, ' ');

  AtomicFileWriter w(path);
  uint8_t size_bytes[8];
  for (int i = 0; i < 8; ++i)
    size_bytes[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));
  w.write(size_bytes, sizeof(size_bytes));
  w.write(text.data(), text.size());
  std::vector<uint16_t> half;
  for (size_t i = 0; i < order.size(); ++i) {
    const float* src = order[i]->data;
    if (dtype == DType::F32) {
      w.write(src, counts[i] * sizeof(float));
      continue;
    }
    for (size_t b = 0; b < counts[i]; b += kChunk) {
      const size_t n = std::min(kChunk, counts[i] - b);
      half.resize(n);
      for (size_t k = 0; k < n; ++k) half[k] = f32_to_bf16(src[b + k]);
      w.write(half.data(), n * sizeof(uint16_t));
    }
  }
  w.commit();
}

}  // namespace kiln
