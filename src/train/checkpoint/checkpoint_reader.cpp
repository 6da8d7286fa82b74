// LoadedCheckpoint::open: nothing the file says is used before it is checked against the file.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <utility>

#include "core/error.hpp"
#include "train/checkpoint/checkpoint.hpp"
#include "train/checkpoint/checkpoint_codec.hpp"
#include "util/mapped_file.hpp"

namespace kiln {

namespace {

using ckpt_codec::from_fb;

constexpr uint64_t kHeaderBytes = sizeof(kCheckpointMagic) + 8;

uint64_t read_le_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

class Reader {
 public:
  Reader(const std::filesystem::path& path, const uint8_t* data, uint64_t size)
      : path_(path.string()), data_(data), size_(size) {}

  [[noreturn]] void bad(const std::string& field, const std::string& what,
                        kiln_status status = KILN_ERR_FORMAT) const {
    fail(status, "checkpoint '" + path_ + "': " + field + " " + what);
  }

  const ckpt::Manifest& manifest() {
    if (size_ < kHeaderBytes) {
      bad("header", "is cut short: the file has " + std::to_string(size_) +
                        " bytes, the magic and manifest size need " + std::to_string(kHeaderBytes));
    }
    if (std::memcmp(data_, kCheckpointMagic, sizeof(kCheckpointMagic)) != 0) {
      bad("magic", "is wrong: the file does not start with \"KILNCKPT\" (not a kiln checkpoint)");
    }
    manifest_size_ = read_le_u64(data_ + sizeof(kCheckpointMagic));
    if (manifest_size_ > size_ - kHeaderBytes) {
      bad("manifest size", "says " + std::to_string(manifest_size_) + " bytes, but only " +
                               std::to_string(size_ - kHeaderBytes) +
                               " follow the header (truncated file?)");
    }
    const uint8_t* m = data_ + kHeaderBytes;
    if (manifest_size_ < 8 || !ckpt::ManifestBufferHasIdentifier(m)) {
      bad("manifest", "lacks the \"KCKP\" flatbuffers identifier (corrupt)");
    }
    flatbuffers::Verifier verifier(m, static_cast<size_t>(manifest_size_));
    if (!ckpt::VerifyManifestBuffer(verifier)) {
      bad("manifest", "fails flatbuffers verification (corrupt or truncated)");
    }
    const ckpt::Manifest* manifest = ckpt::GetManifest(m);
    const uint32_t version = manifest->format_version();
    if (version == 0) bad("format_version", "is 0 (corrupt)");
    if (version > kCheckpointFormatVersion) {
      bad("format_version",
          "is " + std::to_string(version) + "; this kiln reads version " +
              std::to_string(kCheckpointFormatVersion) + " (written by a newer kiln?)",
          KILN_ERR_UNSUPPORTED);
    }
    return *manifest;
  }

  TrainerOptions options(const ckpt::TrainerOptions& o) const {
    TrainerOptions t;
    OptimizerOptions& opt = t.optimizer;
    opt.kind = known(from_fb(o.optimizer()), "options.optimizer", static_cast<int>(o.optimizer()));
    opt.lr = o.lr();
    opt.beta1 = o.beta1();
    opt.beta2 = o.beta2();
    opt.eps = o.eps();
    opt.weight_decay = o.weight_decay();
    if (o.role_groups() != nullptr) {
      std::set<uint8_t> roles;
      for (uint32_t i = 0; i < o.role_groups()->size(); ++i) {
        const ckpt::RoleGroup& g = *o.role_groups()->Get(i);
        const std::string field = "options.role_groups[" + std::to_string(i) + "].role";
        if (g.role() >= kParamRoleCount) {
          bad(field, "is " + std::to_string(g.role()) + ", not a parameter role (0.." +
                         std::to_string(kParamRoleCount - 1) + ")");
        }
        if (!roles.insert(g.role()).second) {
          bad(field,
              "repeats role " + std::string(param_role_name(static_cast<ParamRole>(g.role()))));
        }
        ParamGroup& group = opt.groups[g.role()];
        if (g.has_lr()) group.lr = g.lr();
        if (g.has_weight_decay()) group.weight_decay = g.weight_decay();
      }
    }
    opt.muon.lr = o.muon_lr();
    opt.muon.momentum = o.muon_momentum();
    opt.muon.nesterov = o.muon_nesterov();
    opt.muon.ns_steps = o.muon_ns_steps();
    opt.muon.weight_decay = o.muon_weight_decay();
    t.schedule.kind =
        known(from_fb(o.schedule()), "options.schedule", static_cast<int>(o.schedule()));
    t.schedule.warmup_steps = o.warmup_steps();
    t.schedule.total_steps = o.total_steps();
    t.schedule.min_lr_ratio = o.min_lr_ratio();
    t.schedule.decay_fraction = o.decay_fraction();
    t.grad_accum_steps = o.grad_accum_steps();
    t.clip_norm = o.clip_norm();
    t.seed = o.seed();
    t.residual_dropout = o.residual_dropout();
    if (o.mtp_weights() != nullptr) {
      t.mtp_weights.assign(o.mtp_weights()->begin(), o.mtp_weights()->end());
    }
    return t;
  }

  // flatbuffers 2.0's Verifier checks only the 4-byte alignment of a vector's length prefix, so a
  // crafted manifest can put the elements of a [long] or [ulong] vector off their 8-byte alignment,
  // and reading them (Get, begin/end) is then a misaligned load: undefined behaviour, found by
  // fuzz_checkpoint. flatbuffers writers always align them, so such a vector is corrupt.
  template <typename T>
  void require_aligned(const flatbuffers::Vector<T>& v, const std::string& field) const {
    if (v.size() > 0 && reinterpret_cast<uintptr_t>(v.Data()) % alignof(T) != 0) {
      bad(field, "is not " + std::to_string(alignof(T)) +
                     "-byte aligned in the manifest (corrupt: flatbuffers writers align it)");
    }
  }

  std::vector<CheckpointTensor> tensors(
      const flatbuffers::Vector<flatbuffers::Offset<ckpt::Tensor>>& list) const {
    const uint64_t data_start = kHeaderBytes + manifest_size_;
    std::vector<CheckpointTensor> out;
    std::set<std::pair<std::string, TensorKind>> seen;
    out.reserve(list.size());
    for (uint32_t i = 0; i < list.size(); ++i) {
      const ckpt::Tensor& fb = *list.Get(i);
      CheckpointTensor t;
      t.name = fb.name()->str();
      const std::string field = "tensors[" + std::to_string(i) + "] ('" + t.name + "')";
      if (t.name.empty()) bad(field, "has an empty name");
      t.kind = known(from_fb(fb.kind()), field + " kind", static_cast<int>(fb.kind()));
      t.dtype = known(from_fb(fb.dtype()), field + " dtype", static_cast<int>(fb.dtype()));
      if (!seen.insert({t.name, t.kind}).second) {
        bad(field, "repeats the " + std::string(tensor_kind_name(t.kind)) + " tensor of that name");
      }
      // numel with overflow checks: the product must fit with room for the dtype size.
      const uint64_t limit = std::numeric_limits<uint64_t>::max() / 8;
      uint64_t numel = 1;
      require_aligned(*fb.shape(), field + " shape");
      for (uint32_t d = 0; d < fb.shape()->size(); ++d) {
        const int64_t dim = fb.shape()->Get(d);
        if (dim <= 0) {
          bad(field + " shape[" + std::to_string(d) + "]",
              "is " + std::to_string(dim) + " (must be > 0)");
        }
        if (static_cast<uint64_t>(dim) > limit / numel) bad(field + " shape", "overflows 64 bits");
        numel *= static_cast<uint64_t>(dim);
        t.shape.push_back(dim);
      }
      const uint64_t expected = numel * dtype_size(t.dtype);
      if (fb.nbytes() != expected) {
        bad(field + " nbytes",
            "is " + std::to_string(fb.nbytes()) + ", but shape " + shape_string(t.shape) + " of " +
                std::string(dtype_name(t.dtype)) + " needs " + std::to_string(expected));
      }
      const uint64_t offset = fb.offset();
      if (offset % kCheckpointAlign != 0) {
        bad(field + " offset", "is " + std::to_string(offset) + ", not a multiple of " +
                                   std::to_string(kCheckpointAlign));
      }
      if (offset < data_start) {
        bad(field + " offset", "is " + std::to_string(offset) +
                                   ", inside the header and manifest (data starts at " +
                                   std::to_string(data_start) + ")");
      }
      if (offset > size_ || fb.nbytes() > size_ - offset) {
        bad(field + " offset", "+ nbytes = " + std::to_string(offset) + " + " +
                                   std::to_string(fb.nbytes()) + " runs past the end of the " +
                                   std::to_string(size_) + "-byte file (truncated?)");
      }
      t.data = data_ + offset;
      t.nbytes = static_cast<size_t>(fb.nbytes());
      out.push_back(std::move(t));
    }
    // No two tensors may share bytes.
    std::vector<size_t> order(out.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return out[a].data < out[b].data; });
    for (size_t k = 1; k < order.size(); ++k) {
      const CheckpointTensor& prev = out[order[k - 1]];
      const CheckpointTensor& cur = out[order[k]];
      if (cur.data < prev.data + prev.nbytes) {
        bad("tensors[" + std::to_string(order[k]) + "] ('" + cur.name + "')",
            "overlaps tensors[" + std::to_string(order[k - 1]) + "] ('" + prev.name + "')");
      }
    }
    return out;
  }

 private:
  template <class T>
  T known(std::optional<T> v, const std::string& field, int raw) const {
    if (!v)
      bad(field, "is " + std::to_string(raw) + ", a value this kiln does not know",
          KILN_ERR_UNSUPPORTED);
    return *v;
  }

  static std::string shape_string(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
  }

  std::string path_;
  const uint8_t* data_;
  uint64_t size_;
  uint64_t manifest_size_ = 0;
};

std::string text(const flatbuffers::String* s) { return s == nullptr ? std::string() : s->str(); }

}  // namespace

LoadedCheckpoint::~LoadedCheckpoint() = default;

std::unique_ptr<LoadedCheckpoint> LoadedCheckpoint::open(const std::filesystem::path& path) {
  std::unique_ptr<LoadedCheckpoint> ckpt(new LoadedCheckpoint());
  ckpt->path_ = path;
  ckpt->file_ = MappedFile::open(path);
  Reader reader(path, ckpt->file_->data(), ckpt->file_->size());
  const ckpt::Manifest& m = reader.manifest();
  CheckpointContents& c = ckpt->contents_;
  c.config_json = text(m.config_json());
  c.tokenizer_json = text(m.tokenizer_json());
  c.tokenizer_config_json = text(m.tokenizer_config_json());
  c.options = reader.options(*m.options());
  c.step = m.step();
  if (c.step < 0) reader.bad("step", "is " + std::to_string(c.step) + " (< 0)");
  if (m.rng_state() != nullptr) {
    reader.require_aligned(*m.rng_state(), "rng_state");
    c.rng_state.assign(m.rng_state()->begin(), m.rng_state()->end());
  }
  if (m.data_state() != nullptr)
    c.data_state.assign(m.data_state()->begin(), m.data_state()->end());
  c.tensors = reader.tensors(*m.tensors());
  c.optimizer_world = m.optimizer_world();
  c.optimizer_layout_total = m.optimizer_layout_total();
  if (c.optimizer_world < 0) {
    reader.bad("optimizer_world", "is " + std::to_string(c.optimizer_world) + " (< 0)");
  }
  if (c.optimizer_world > 0 && c.optimizer_layout_total < 1) {
    reader.bad("optimizer_layout_total", "is " + std::to_string(c.optimizer_layout_total) +
                                             " with the state in " +
                                             std::to_string(c.optimizer_world) + " shards");
  }
  if (const ckpt::OptimizerShard* s = m.shard()) {
    CheckpointShard shard{s->world(), s->rank(), s->layout_total(), s->begin(), s->end()};
    if (shard.world < 1 || shard.rank < 0 || shard.rank >= shard.world) {
      reader.bad("shard", "names rank " + std::to_string(shard.rank) + " of a world of " +
                              std::to_string(shard.world));
    }
    if (shard.layout_total < 1 || shard.begin < 0 || shard.end < shard.begin ||
        shard.end > shard.layout_total) {
      reader.bad("shard", "holds [" + std::to_string(shard.begin) + ", " +
                              std::to_string(shard.end) + ") of " +
                              std::to_string(shard.layout_total) + " elements (out of range)");
    }
    c.shard = shard;
  }
  return ckpt;
}

}  // namespace kiln
