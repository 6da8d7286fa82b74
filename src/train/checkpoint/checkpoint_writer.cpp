// save_checkpoint: the manifest is built twice, first with placeholder offsets to learn its size
// (every scalar is forced into the buffer, so the size does not depend on the values), then with
// the real absolute offsets of the tensors that follow it.
#include <cstring>
#include <set>
#include <string>
#include <utility>

#include "core/error.hpp"
#include "train/checkpoint/checkpoint.hpp"
#include "train/checkpoint/checkpoint_codec.hpp"
#include "util/atomic_file.hpp"

namespace kiln {

namespace {

using ckpt_codec::to_fb;

uint64_t align_up(uint64_t v) {
  return (v + kCheckpointAlign - 1) / kCheckpointAlign * kCheckpointAlign;
}

void validate(const std::filesystem::path& path, const CheckpointContents& c) {
  const auto bad = [&](const std::string& what) {
    fail(KILN_ERR_INVALID_ARGUMENT, "cannot save checkpoint '" + path.string() + "': " + what);
  };
  if (c.step < 0) bad("step is " + std::to_string(c.step) + " (< 0)");
  std::set<std::pair<std::string, TensorKind>> seen;
  for (size_t i = 0; i < c.tensors.size(); ++i) {
    const CheckpointTensor& t = c.tensors[i];
    const std::string where =
        "tensor " + std::to_string(i) + " ('" + t.name + "', " + tensor_kind_name(t.kind) + ")";
    if (t.name.empty()) bad("tensor " + std::to_string(i) + " has an empty name");
    if (static_cast<uint8_t>(t.kind) >= kTensorKindCount) bad(where + " has an unknown kind");
    if (!seen.insert({t.name, t.kind}).second) bad(where + " appears twice");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d <= 0) bad(where + " has a non-positive dimension " + std::to_string(d));
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * dtype_size(t.dtype) != t.nbytes) {
      bad(where + " has nbytes " + std::to_string(t.nbytes) + ", but its shape and dtype " +
          std::string(dtype_name(t.dtype)) + " need " +
          std::to_string(numel * dtype_size(t.dtype)));
    }
    if (t.data == nullptr) bad(where + " has no data");
  }
  if (c.optimizer_world < 0) {
    bad("optimizer_world is " + std::to_string(c.optimizer_world) + " (< 0)");
  }
  if (c.optimizer_world > 0 && c.optimizer_layout_total < 1) {
    bad("optimizer_layout_total is " + std::to_string(c.optimizer_layout_total) +
        " with the state in " + std::to_string(c.optimizer_world) + " shards");
  }
  if (c.shard) {
    const CheckpointShard& s = *c.shard;
    if (s.world < 1 || s.rank < 0 || s.rank >= s.world || s.layout_total < 1 || s.begin < 0 ||
        s.end < s.begin || s.end > s.layout_total) {
      bad("shard rank " + std::to_string(s.rank) + " of " + std::to_string(s.world) + " holds [" +
          std::to_string(s.begin) + ", " + std::to_string(s.end) + ") of " +
          std::to_string(s.layout_total) + " elements (out of range)");
    }
  }
}

flatbuffers::Offset<ckpt::TrainerOptions> build_options(flatbuffers::FlatBufferBuilder& b,
                                                        const TrainerOptions& o) {
  std::vector<flatbuffers::Offset<ckpt::RoleGroup>> groups;
  for (size_t r = 0; r < kParamRoleCount; ++r) {
    const ParamGroup& g = o.optimizer.groups[r];
    if (!g.lr && !g.weight_decay) continue;
    groups.push_back(ckpt::CreateRoleGroup(b, static_cast<uint8_t>(r), g.lr.has_value(),
                                           g.lr.value_or(0.0f), g.weight_decay.has_value(),
                                           g.weight_decay.value_or(0.0f)));
  }
  const auto groups_vec = b.CreateVector(groups);
  const auto mtp = b.CreateVector(o.mtp_weights);
  const OptimizerOptions& opt = o.optimizer;
  ckpt::TrainerOptionsBuilder t(b);
  t.add_optimizer(to_fb(opt.kind));
  t.add_lr(opt.lr);
  t.add_beta1(opt.beta1);
  t.add_beta2(opt.beta2);
  t.add_eps(opt.eps);
  t.add_weight_decay(opt.weight_decay);
  t.add_role_groups(groups_vec);
  t.add_muon_lr(opt.muon.lr);
  t.add_muon_momentum(opt.muon.momentum);
  t.add_muon_nesterov(opt.muon.nesterov);
  t.add_muon_ns_steps(opt.muon.ns_steps);
  t.add_muon_weight_decay(opt.muon.weight_decay);
  t.add_schedule(to_fb(o.schedule.kind));
  t.add_warmup_steps(o.schedule.warmup_steps);
  t.add_total_steps(o.schedule.total_steps);
  t.add_min_lr_ratio(o.schedule.min_lr_ratio);
  t.add_decay_fraction(o.schedule.decay_fraction);
  t.add_grad_accum_steps(o.grad_accum_steps);
  t.add_clip_norm(o.clip_norm);
  t.add_seed(o.seed);
  t.add_mtp_weights(mtp);
  t.add_residual_dropout(o.residual_dropout);
  return t.Finish();
}

// The finished manifest for the given tensor offsets (absolute, in file order).
flatbuffers::DetachedBuffer build_manifest(const CheckpointContents& c,
                                           const std::vector<uint64_t>& offsets) {
  flatbuffers::FlatBufferBuilder b(4096);
  b.ForceDefaults(true);
  const auto optional_string = [&](const std::string& s) {
    return s.empty() ? flatbuffers::Offset<flatbuffers::String>() : b.CreateString(s);
  };
  const auto config = b.CreateString(c.config_json);
  const auto tokenizer = optional_string(c.tokenizer_json);
  const auto tokenizer_config = optional_string(c.tokenizer_config_json);
  const auto options = build_options(b, c.options);
  const auto rng = b.CreateVector(c.rng_state);
  const auto data_state = b.CreateVector(c.data_state);
  std::vector<flatbuffers::Offset<ckpt::Tensor>> tensors;
  for (size_t i = 0; i < c.tensors.size(); ++i) {
    const CheckpointTensor& t = c.tensors[i];
    tensors.push_back(ckpt::CreateTensorDirect(b, t.name.c_str(), to_fb(t.kind), to_fb(t.dtype),
                                               &t.shape, offsets[i], t.nbytes));
  }
  const auto tensors_vec = b.CreateVector(tensors);
  flatbuffers::Offset<ckpt::OptimizerShard> shard;
  if (c.shard) {
    shard = ckpt::CreateOptimizerShard(b, c.shard->world, c.shard->rank, c.shard->layout_total,
                                       c.shard->begin, c.shard->end);
  }
  const bool sharded = c.optimizer_world > 0 || c.shard.has_value();
  ckpt::ManifestBuilder m(b);
  m.add_format_version(sharded ? kCheckpointFormatVersion : kCheckpointUnshardedVersion);
  m.add_config_json(config);
  if (!c.tokenizer_json.empty()) m.add_tokenizer_json(tokenizer);
  if (!c.tokenizer_config_json.empty()) m.add_tokenizer_config_json(tokenizer_config);
  m.add_options(options);
  m.add_step(c.step);
  m.add_rng_state(rng);
  m.add_data_state(data_state);
  m.add_tensors(tensors_vec);
  if (sharded) {
    m.add_optimizer_world(c.optimizer_world);
    m.add_optimizer_layout_total(c.optimizer_layout_total);
    if (c.shard) m.add_shard(shard);
  }
  ckpt::FinishManifestBuffer(b, m.Finish());
  return b.Release();
}

void write_le_u64(AtomicFileWriter& w, uint64_t v) {
  uint8_t bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>(v >> (8 * i));
  w.write(bytes, sizeof(bytes));
}

}  // namespace

const CheckpointTensor* CheckpointContents::find(const std::string& name, TensorKind kind) const {
  for (const CheckpointTensor& t : tensors) {
    if (t.kind == kind && t.name == name) return &t;
  }
  return nullptr;
}

void save_checkpoint(const std::filesystem::path& path, const CheckpointContents& contents) {
  validate(path, contents);
  const size_t n = contents.tensors.size();
  const size_t manifest_size = build_manifest(contents, std::vector<uint64_t>(n, 0)).size();
  std::vector<uint64_t> offsets(n);
  uint64_t pos = align_up(sizeof(kCheckpointMagic) + 8 + manifest_size);
  for (size_t i = 0; i < n; ++i) {
    offsets[i] = pos;
    pos = align_up(pos + contents.tensors[i].nbytes);
  }
  const flatbuffers::DetachedBuffer manifest = build_manifest(contents, offsets);
  if (manifest.size() != manifest_size) {
    fail(KILN_ERR_INTERNAL, "checkpoint manifest changed size between passes (" +
                                std::to_string(manifest_size) + " vs " +
                                std::to_string(manifest.size()) + " bytes)");
  }

  AtomicFileWriter w(path);
  w.write(kCheckpointMagic, sizeof(kCheckpointMagic));
  write_le_u64(w, manifest.size());
  w.write(manifest.data(), manifest.size());
  for (size_t i = 0; i < n; ++i) {
    w.pad_to(offsets[i]);
    w.write(contents.tensors[i].data, contents.tensors[i].nbytes);
  }
  w.commit();
}

}  // namespace kiln
