// WeightSet: the tensors of one HF model directory, either a single model.safetensors or the
// shards listed by model.safetensors.index.json ({"metadata": {...}, "weight_map": {tensor:
// file}}).
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "formats/safetensors.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// The index, validated: shard file name -> the tensors it must hold.
std::map<std::string, std::vector<std::string>> read_shard_index(const fs::path& index_path) {
  const std::string where = index_path.string();
  json index;
  try {
    index = json::parse(read_text_file(index_path));
  } catch (const json::exception& e) {
    fail(KILN_ERR_FORMAT, where + ": not valid JSON: " + e.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    fail(KILN_ERR_FORMAT, where + ": expected an object with a \"weight_map\" object");
  }
  std::map<std::string, std::vector<std::string>> shards;
  for (const auto& [tensor, file] : index["weight_map"].items()) {
    if (!file.is_string()) {
      fail(KILN_ERR_FORMAT, where + ": weight_map[\"" + tensor + "\"] is " + file.dump() +
                                ", expected a shard file name");
    }
    const fs::path shard = file.get<std::string>();
    // Shards live next to the index; anything else would read files outside the model directory.
    if (shard.empty() || shard.is_absolute() || shard.has_parent_path()) {
      fail(KILN_ERR_FORMAT, where + ": weight_map[\"" + tensor + "\"] names \"" + shard.string() +
                                "\", expected a file name in the model directory");
    }
    shards[shard.string()].push_back(tensor);
  }
  if (shards.empty()) fail(KILN_ERR_FORMAT, where + ": weight_map is empty");
  return shards;
}

}  // namespace

std::unique_ptr<WeightSet> WeightSet::open_dir(const fs::path& model_dir) {
  std::error_code ec;
  if (!fs::exists(model_dir, ec)) {
    fail(KILN_ERR_NOT_FOUND, "model directory " + model_dir.string() + " does not exist");
  }
  if (!fs::is_directory(model_dir, ec)) {
    fail(KILN_ERR_IO, "model path " + model_dir.string() + " is not a directory");
  }

  auto set = std::make_unique<WeightSet>();
  const auto add = [&](std::unique_ptr<SafetensorsFile> file) {
    const std::string file_name = file->path().filename().string();
    const auto claim = [&](const std::string& name) {
      if (set->index_.count(name) || set->unsupported_.count(name)) {
        fail(KILN_ERR_FORMAT, "tensor " + name + " is in both " + file_name + " and " +
                                  set->description_ + " of " + model_dir.string());
      }
    };
    for (const auto& [name, view] : file->tensors()) {
      claim(name);
      set->index_.emplace(name, &view);
    }
    for (const auto& [name, dtype] : file->unsupported()) {
      claim(name);
      set->unsupported_.emplace(name, "dtype " + dtype + " in " + file->path().string());
    }
    set->description_ += (set->description_.empty() ? "" : ", ") + file_name;
    set->files_.push_back(std::move(file));
  };

  const fs::path single = model_dir / kSingleFile;
  const fs::path index_path = model_dir / kIndexFile;
  if (fs::exists(single, ec)) {
    add(SafetensorsFile::open(single));
  } else if (fs::exists(index_path, ec)) {
    for (const auto& [shard, expected] : read_shard_index(index_path)) {
      const fs::path shard_path = model_dir / shard;
      if (!fs::exists(shard_path, ec)) {
        fail(KILN_ERR_NOT_FOUND, index_path.string() + " names shard " + shard +
                                     ", which does not exist in " + model_dir.string());
      }
      auto file = SafetensorsFile::open(shard_path);
      for (const auto& tensor : expected) {
        if (!file->tensors().count(tensor) && !file->unsupported().count(tensor)) {
          fail(KILN_ERR_FORMAT, index_path.string() + " assigns tensor " + tensor + " to " + shard +
                                    ", but " + shard_path.string() + " does not hold it");
        }
      }
      add(std::move(file));
    }
  } else {
    fail(KILN_ERR_NOT_FOUND, "no weights found in " + model_dir.string() + ": expected " +
                                 kSingleFile + " or " + kIndexFile);
  }
  set->description_ += " (in " + model_dir.string() + ")";
  return set;
}

const TensorView* WeightSet::find(const std::string& name) const {
  if (auto it = index_.find(name); it != index_.end()) return it->second;
  if (auto it = unsupported_.find(name); it != unsupported_.end()) {
    fail(KILN_ERR_UNSUPPORTED,
         "tensor " + name + " has " + it->second + "; kiln reads F32, F16 and BF16 tensors only");
  }
  return nullptr;
}

const TensorView& WeightSet::get(const std::string& name) const {
  const TensorView* view = find(name);
  if (view == nullptr) {
    fail(KILN_ERR_FORMAT, "tensor " + name + " not found in " + description_);
  }
  return *view;
}

std::vector<std::string> WeightSet::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& entry : index_) out.push_back(entry.first);
  return out;
}

size_t WeightSet::total_bytes() const {
  size_t total = 0;
  for (const auto& entry : index_) total += entry.second->nbytes;
  return total;
}

}  // namespace kiln
