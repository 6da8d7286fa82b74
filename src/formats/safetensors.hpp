// Safetensors reading: https://github.com/huggingface/safetensors (format: 8-byte little-endian
// header length N, N bytes of JSON {name: {dtype, shape, data_offsets:[begin,end]},
// "__metadata__"}, then the byte buffer; offsets are relative to the buffer start).
//
// Files are memory-mapped read-only; TensorView points into the mapping, so a SafetensorsFile must
// outlive every view taken from it. Every header is validated against the real file size before
// any tensor is touched: offsets inside the buffer, end >= begin, byte count == prod(shape) *
// dtype size, no two tensors overlapping, header length sane.
//
// Dtypes kiln does not compute with (I64, F8_E4M3, ...) do not fail the file: such a tensor is
// validated like any other (byte count checked wherever the dtype's size is known), recorded in
// unsupported(), and only asking a WeightSet for it throws KILN_ERR_UNSUPPORTED. A checkpoint that
// carries an unrelated I64 buffer next to its F16 weights therefore still loads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.hpp"
#include "formats/quant/ggml_type.hpp"

namespace kiln {

class MappedFile;

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  // The block format when dtype is DType::GGML (a GGUF tensor kept quantised): each row of the
  // last dimension is then a whole number of blocks, stored one after another.
  quant::GgmlType ggml_type = quant::GgmlType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // into the mapping; any alignment
  size_t nbytes = 0;
  std::string file;  // the file it lives in, for messages

  int64_t numel() const;
  // Bytes taken by the first `elements` elements (a whole number of blocks for DType::GGML; the
  // caller only asks at row boundaries).
  size_t byte_offset(int64_t elements) const;
};

class SafetensorsFile {
 public:
  // Throws kiln::Error: KILN_ERR_NOT_FOUND, KILN_ERR_IO, KILN_ERR_FORMAT (every lie named, with the
  // file and the tensor). Tensors of other dtypes than F32/F16/BF16 go to unsupported().
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();

  // The F32/F16/BF16 tensors.
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  // The other tensors: name -> safetensors dtype string ("I64", "F8_E4M3", ...).
  const std::map<std::string, std::string>& unsupported() const { return unsupported_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> unsupported_;
};

// All tensors of a model directory: model.safetensors, or the shards named by
// model.safetensors.index.json (every shard named there must exist and hold the tensors the index
// says it holds).
class WeightSet {
 public:
  // Throws kiln::Error: KILN_ERR_NOT_FOUND (no directory, no weights in it, a shard the index
  // names is missing), KILN_ERR_FORMAT (a bad file or index, a tensor the index assigns to a shard
  // that lacks it, a tensor present in two shards), KILN_ERR_IO.
  static std::unique_ptr<WeightSet> open_dir(const std::filesystem::path& model_dir);

  // A float32 tensor held in memory (a GGUF tensor dequantised at load), under its HF name.
  struct OwnedF32Tensor {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values;  // prod(shape) of them
  };
  // A set that owns its tensors. `origin` (the source file) appears in messages. Throws
  // KILN_ERR_FORMAT on a duplicate name or a value count that disagrees with the shape.
  static std::unique_ptr<WeightSet> from_owned(std::vector<OwnedF32Tensor> tensors,
                                               const std::string& origin);

  // A set over tensors stored elsewhere: each view points into a mapping that `keep_alive` holds
  // (a GgufFile) or into one of `buffers` (tensors whose bytes were rearranged at load), both kept
  // as long as the set. Throws KILN_ERR_FORMAT on a duplicate name.
  static std::unique_ptr<WeightSet> from_views(std::vector<TensorView> views,
                                               std::vector<std::vector<uint8_t>> buffers,
                                               std::shared_ptr<const void> keep_alive,
                                               const std::string& origin);

  // nullptr when absent. Throws KILN_ERR_UNSUPPORTED (naming tensor, dtype and file) when the
  // tensor exists with a dtype kiln does not handle: present-but-unusable is never reported as
  // absent.
  const TensorView* find(const std::string& name) const;
  // As find(), and throws KILN_ERR_FORMAT naming the tensor and the files searched when absent.
  const TensorView& get(const std::string& name) const;
  // The usable (F32/F16/BF16) tensors, sorted.
  std::vector<std::string> names() const;
  // Sum of the usable tensors' byte counts.
  size_t total_bytes() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  struct OwnedView {
    OwnedF32Tensor tensor;
    TensorView view;  // points into tensor.values
  };
  std::vector<std::unique_ptr<OwnedView>> owned_;
  std::vector<std::unique_ptr<TensorView>> views_;
  std::vector<std::vector<uint8_t>> buffers_;
  std::shared_ptr<const void> keep_alive_;
  std::map<std::string, const TensorView*> index_;
  // name -> "dtype DT in FILE", for the KILN_ERR_UNSUPPORTED message.
  std::map<std::string, std::string> unsupported_;
  std::string description_;  // for messages: the files searched
};

}  // namespace kiln
