// Training checkpoints (docs/training-design.md, "Checkpoints"; schema: schemas/checkpoint.fbs).
//
// One file: "KILNCKPT", u64 little-endian manifest size, a flatbuffers manifest (format version,
// config.json text, tokenizer texts, trainer options, step, RNG state, data-loader state, tensor
// table), then the raw tensors, each at a 64-byte aligned absolute offset so that the mapped file
// serves them in place.
//
// Format version 2 adds ZeRO-1 sharded optimizer state (sharded_optimizer.hpp): the main file then
// says how many shard files hold the state, and each shard file says which slice it holds. Files
// without sharding are still written as version 1, so older readers keep reading them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "train/tensor_kind.hpp"
#include "train/trainer_options.hpp"

namespace kiln {

class MappedFile;

// The newest format this library reads (and writes when the optimizer state is sharded).
inline constexpr uint32_t kCheckpointFormatVersion = 2;
inline constexpr uint32_t kCheckpointUnshardedVersion = 1;
inline constexpr char kCheckpointMagic[8] = {'K', 'I', 'L', 'N', 'C', 'K', 'P', 'T'};
inline constexpr uint64_t kCheckpointAlign = 64;

// One tensor: for saving, `data` is borrowed from the caller for the duration of the call; after
// loading it points into the LoadedCheckpoint's mapping (64-byte aligned).
struct CheckpointTensor {
  std::string name;
  TensorKind kind = TensorKind::Value;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;  // prod(shape) * dtype_size(dtype)
};

// The slice of the flat optimizer state one shard file holds (schemas/checkpoint.fbs,
// OptimizerShard).
struct CheckpointShard {
  int32_t world = 0;
  int32_t rank = 0;
  int64_t layout_total = 0;
  int64_t begin = 0, end = 0;
};

struct CheckpointContents {
  std::string config_json;            // the model's config.json text
  std::string tokenizer_json;         // empty = the model has none
  std::string tokenizer_config_json;  // empty = the model has none
  TrainerOptions options;
  int64_t step = 0;  // optimizer updates completed
  std::vector<uint64_t> rng_state;
  std::vector<uint8_t> data_state;  // opaque, from the user's data loader
  std::vector<CheckpointTensor> tensors;
  // > 0: the optimizer state lives in this many shard files beside this one, cut from a flat
  // buffer of optimizer_layout_total elements; 0: the state tensors are in `tensors`.
  int32_t optimizer_world = 0;
  int64_t optimizer_layout_total = 0;
  std::optional<CheckpointShard> shard;  // set in a shard file only

  // nullptr when absent.
  const CheckpointTensor* find(const std::string& name, TensorKind kind) const;
};

// Writes the checkpoint atomically (util/atomic_file.hpp): a crash or an error at any point leaves
// a previous file at `path` intact. Throws kiln::Error: KILN_ERR_INVALID_ARGUMENT (a tensor whose
// nbytes disagrees with its shape and dtype, a null data pointer, a duplicate (name, kind), a
// negative step, an empty name, sharding fields out of range), KILN_ERR_NOT_FOUND (no such
// directory), KILN_ERR_IO (naming the file and the OS reason).
void save_checkpoint(const std::filesystem::path& path, const CheckpointContents& contents);

// A checkpoint read from a memory-mapped file; tensors() point into the mapping, which lives as
// long as this object.
class LoadedCheckpoint {
 public:
  // Maps the file, verifies the manifest with the flatbuffers Verifier, and checks every claim
  // against the file before anything is used: magic, manifest size, format version, enum values,
  // each tensor's dtype, shape, nbytes = prod(shape) * dtype size, offset alignment, range inside
  // the data region, no overlaps, no duplicate (name, kind). Throws kiln::Error:
  // KILN_ERR_NOT_FOUND (no file), KILN_ERR_IO (unreadable), KILN_ERR_FORMAT (naming the file and
  // the field that lies; sharding fields out of range too), KILN_ERR_UNSUPPORTED (a format version
  // newer than this library's).
  static std::unique_ptr<LoadedCheckpoint> open(const std::filesystem::path& path);
  ~LoadedCheckpoint();

  const CheckpointContents& contents() const { return contents_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  LoadedCheckpoint() = default;
  std::filesystem::path path_;
  std::unique_ptr<MappedFile> file_;
  CheckpointContents contents_;
};

}  // namespace kiln
