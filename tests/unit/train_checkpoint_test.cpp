// Training checkpoints: bit-exact round trip, every kind of lie in the file rejected with a
// specific status and message, and atomic replacement (an interrupted save leaves the previous
// checkpoint loadable).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "checkpoint_generated.h"
#include "core/error.hpp"
#include "test_support.hpp"
#include "train/checkpoint/checkpoint.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;

// Owns the bytes that CheckpointContents' tensors borrow.
struct Sample {
  std::vector<std::vector<uint8_t>> blobs;
  CheckpointContents contents;

  void add(const std::string& name, TensorKind kind, DType dtype, std::vector<int64_t> shape,
           uint32_t seed) {
    size_t numel = 1;
    for (int64_t d : shape) numel *= static_cast<size_t>(d);
    std::vector<uint8_t> bytes(numel * dtype_size(dtype));
    std::mt19937 rng(seed);
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    blobs.push_back(std::move(bytes));
    contents.tensors.push_back(
        {name, kind, dtype, std::move(shape), blobs.back().data(), blobs.back().size()});
  }
};

Sample make_sample(uint32_t seed = 1) {
  Sample s;
  s.blobs.reserve(16);
  CheckpointContents& c = s.contents;
  c.config_json = R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 8})";
  c.tokenizer_json = R"({"model": {"type": "BPE"}})";
  c.tokenizer_config_json = R"({"add_bos_token": true})";
  TrainerOptions& o = c.options;
  o.optimizer.kind = OptimizerKind::Muon;
  o.optimizer.lr = 3e-4f;
  o.optimizer.beta1 = 0.8f;
  o.optimizer.beta2 = 0.95f;
  o.optimizer.eps = 1e-10f;
  o.optimizer.weight_decay = 0.0f;  // a default value must survive too
  o.optimizer.groups[static_cast<size_t>(ParamRole::Embedding)].lr = 0.2f;
  o.optimizer.groups[static_cast<size_t>(ParamRole::Norm)].weight_decay = 0.01f;
  o.optimizer.muon = {0.05f, 0.9f, false, 7, 0.02f};
  o.schedule = {ScheduleKind::WarmupStableDecay, 100, 5000, 0.05f, 0.3f};
  o.grad_accum_steps = 4;
  o.clip_norm = 1.0f;
  o.seed = 0xDEADBEEFCAFEF00Dull;
  o.mtp_weights = {0.5f, 0.25f};
  c.step = 1234;
  c.rng_state = {1, 2, 0xFFFFFFFFFFFFFFFFull, 42};
  c.data_state = {0, 1, 2, 255, 7};
  s.add("model.embed_tokens.weight", TensorKind::Value, DType::F32, {37, 8}, seed);
  s.add("model.embed_tokens.weight", TensorKind::AdamM, DType::F32, {37, 8}, seed + 1);
  s.add("model.embed_tokens.weight", TensorKind::AdamV, DType::F32, {37, 8}, seed + 2);
  s.add("model.layers.0.mlp.up_proj.weight", TensorKind::MuonMomentum, DType::F32, {5, 3},
        seed + 3);
  s.add("model.norm.weight", TensorKind::Value, DType::BF16, {13}, seed + 4);
  s.add("lm_head.weight", TensorKind::Value, DType::F16, {3, 1, 7}, seed + 5);
  return s;
}

void expect_same(const CheckpointContents& want, const CheckpointContents& got) {
  EXPECT_EQ(got.config_json, want.config_json);
  EXPECT_EQ(got.tokenizer_json, want.tokenizer_json);
  EXPECT_EQ(got.tokenizer_config_json, want.tokenizer_config_json);
  const TrainerOptions &a = want.options, &b = got.options;
  EXPECT_EQ(b.optimizer.kind, a.optimizer.kind);
  EXPECT_EQ(b.optimizer.lr, a.optimizer.lr);
  EXPECT_EQ(b.optimizer.beta1, a.optimizer.beta1);
  EXPECT_EQ(b.optimizer.beta2, a.optimizer.beta2);
  EXPECT_EQ(b.optimizer.eps, a.optimizer.eps);
  EXPECT_EQ(b.optimizer.weight_decay, a.optimizer.weight_decay);
  for (size_t r = 0; r < kParamRoleCount; ++r) {
    EXPECT_EQ(b.optimizer.groups[r].lr, a.optimizer.groups[r].lr) << r;
    EXPECT_EQ(b.optimizer.groups[r].weight_decay, a.optimizer.groups[r].weight_decay) << r;
  }
  EXPECT_EQ(b.optimizer.muon.lr, a.optimizer.muon.lr);
  EXPECT_EQ(b.optimizer.muon.momentum, a.optimizer.muon.momentum);
  EXPECT_EQ(b.optimizer.muon.nesterov, a.optimizer.muon.nesterov);
  EXPECT_EQ(b.optimizer.muon.ns_steps, a.optimizer.muon.ns_steps);
  EXPECT_EQ(b.optimizer.muon.weight_decay, a.optimizer.muon.weight_decay);
  EXPECT_EQ(b.schedule.kind, a.schedule.kind);
  EXPECT_EQ(b.schedule.warmup_steps, a.schedule.warmup_steps);
  EXPECT_EQ(b.schedule.total_steps, a.schedule.total_steps);
  EXPECT_EQ(b.schedule.min_lr_ratio, a.schedule.min_lr_ratio);
  EXPECT_EQ(b.schedule.decay_fraction, a.schedule.decay_fraction);
  EXPECT_EQ(b.grad_accum_steps, a.grad_accum_steps);
  EXPECT_EQ(b.clip_norm, a.clip_norm);
  EXPECT_EQ(b.seed, a.seed);
  EXPECT_EQ(b.mtp_weights, a.mtp_weights);
  EXPECT_EQ(got.step, want.step);
  EXPECT_EQ(got.rng_state, want.rng_state);
  EXPECT_EQ(got.data_state, want.data_state);
  ASSERT_EQ(got.tensors.size(), want.tensors.size());
  for (size_t i = 0; i < want.tensors.size(); ++i) {
    const CheckpointTensor &w = want.tensors[i], &g = got.tensors[i];
    EXPECT_EQ(g.name, w.name);
    EXPECT_EQ(g.kind, w.kind);
    EXPECT_EQ(g.dtype, w.dtype);
    EXPECT_EQ(g.shape, w.shape);
    ASSERT_EQ(g.nbytes, w.nbytes);
    EXPECT_EQ(0, std::memcmp(g.data, w.data, w.nbytes)) << w.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(g.data) % 64, 0u) << w.name << " not 64-byte aligned";
  }
}

// Status and message of what LoadedCheckpoint::open throws (status 0 = it loaded).
std::pair<kiln_status, std::string> open_result(const fs::path& path) {
  try {
    LoadedCheckpoint::open(path);
  } catch (const Error& e) {
    return {e.status(), e.what()};
  }
  return {KILN_OK, ""};
}

void expect_rejected(const fs::path& path, kiln_status status, const std::string& needle) {
  const auto [got, message] = open_result(path);
  EXPECT_EQ(got, status) << message;
  EXPECT_NE(message.find(needle), std::string::npos) << message;
  EXPECT_NE(message.find(path.string()), std::string::npos) << message;
}

void put_u64(std::string& bytes, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes[at + i] = static_cast<char>(v >> (8 * i));
}

// The position of the only occurrence of `v` (8 bytes LE) inside the manifest region.
size_t find_u64(const std::string& bytes, uint64_t v) {
  std::string needle(8, '\0');
  put_u64(needle, 0, v);
  uint64_t manifest = 0;
  for (int i = 7; i >= 0; --i) manifest = (manifest << 8) | static_cast<uint8_t>(bytes[8 + i]);
  const std::string region = bytes.substr(0, 16 + manifest);
  const size_t at = region.find(needle);
  EXPECT_NE(at, std::string::npos);
  EXPECT_EQ(region.find(needle, at + 1), std::string::npos) << "value " << v << " not unique";
  return at;
}

TEST(Checkpoint, RoundTripIsBitExact) {
  const fs::path dir = test::temp_dir("ckpt");
  const Sample s = make_sample();
  save_checkpoint(dir / "a.kckpt", s.contents);
  const auto loaded = LoadedCheckpoint::open(dir / "a.kckpt");
  expect_same(s.contents, loaded->contents());
  const CheckpointTensor* m =
      loaded->contents().find("model.embed_tokens.weight", TensorKind::AdamM);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->nbytes, 37u * 8 * 4);
  EXPECT_EQ(loaded->contents().find("model.embed_tokens.weight", TensorKind::MuonMomentum),
            nullptr);
  // Only temp-free output: the directory holds the checkpoint alone.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);

  // No tokenizer, no tensors, default options.
  CheckpointContents bare;
  bare.config_json = "{}";
  save_checkpoint(dir / "bare.kckpt", bare);
  expect_same(bare, LoadedCheckpoint::open(dir / "bare.kckpt")->contents());
}

TEST(Checkpoint, SaveRejectsInconsistentContents) {
  const fs::path dir = test::temp_dir("ckpt-bad-contents");
  Sample s = make_sample();
  s.contents.tensors[1].nbytes -= 4;
  try {
    save_checkpoint(dir / "x", s.contents);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("adam_m"), std::string::npos) << e.what();
  }
  s = make_sample();
  s.contents.tensors[2].kind = TensorKind::AdamM;
  EXPECT_THROW(save_checkpoint(dir / "x", s.contents), Error);
  EXPECT_FALSE(fs::exists(dir / "x"));
  try {
    save_checkpoint(dir / "no-such-dir" / "x", make_sample().contents);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_NOT_FOUND) << e.what();
  }
}

TEST(Checkpoint, TruncatedFilesAreFormatErrorsAtEveryLength) {
  const fs::path dir = test::temp_dir("ckpt-trunc");
  save_checkpoint(dir / "full", make_sample().contents);
  const std::string bytes = test::read_file(dir / "full");
  expect_rejected(dir / "missing", KILN_ERR_NOT_FOUND, "missing");
  for (size_t len = 0; len < bytes.size(); len += (len < 64 ? 1 : 37)) {
    const fs::path p = dir / ("cut-" + std::to_string(len));
    test::write_file(p, bytes.substr(0, len));
    const auto [status, message] = open_result(p);
    EXPECT_EQ(status, KILN_ERR_FORMAT) << len << ": " << message;
    fs::remove(p);
  }
  test::write_file(dir / "empty", "");
  expect_rejected(dir / "empty", KILN_ERR_FORMAT, "header is cut short");
  test::write_file(dir / "short", bytes.substr(0, bytes.size() - 1));
  expect_rejected(dir / "short", KILN_ERR_FORMAT, "runs past the end");
  test::write_file(dir / "half", bytes.substr(0, 16 + 40));
  expect_rejected(dir / "half", KILN_ERR_FORMAT, "manifest size");
}

TEST(Checkpoint, LiesInTheHeaderAndTensorTableAreNamed) {
  const fs::path dir = test::temp_dir("ckpt-lies");
  const Sample s = make_sample();
  save_checkpoint(dir / "good", s.contents);
  const std::string good = test::read_file(dir / "good");
  const auto loaded = LoadedCheckpoint::open(dir / "good");
  const auto& tensors = loaded->contents().tensors;
  const uint8_t* base = tensors[0].data;
  const auto file_offset = [&](size_t i) {
    // Tensor 0 starts at the first 64-byte boundary after the manifest.
    uint64_t manifest = 0;
    for (int k = 7; k >= 0; --k) manifest = (manifest << 8) | static_cast<uint8_t>(good[8 + k]);
    return (16 + manifest + 63) / 64 * 64 + static_cast<uint64_t>(tensors[i].data - base);
  };
  const auto patched = [&](const std::string& name, auto&& edit) {
    std::string bytes = good;
    edit(bytes);
    const fs::path p = dir / name;
    test::write_file(p, bytes);
    return p;
  };

  expect_rejected(patched("magic", [](std::string& b) { b[0] = 'X'; }), KILN_ERR_FORMAT, "magic");
  expect_rejected(patched("manifest-size", [&](std::string& b) { put_u64(b, 8, good.size()); }),
                  KILN_ERR_FORMAT, "manifest size");
  expect_rejected(patched("identifier", [](std::string& b) { b[16 + 4] ^= 0x20; }), KILN_ERR_FORMAT,
                  "KCKP");
  // Tensor 3 (15 floats, 60 bytes: a unique value in the manifest) lies about its size.
  expect_rejected(patched("nbytes", [&](std::string& b) { put_u64(b, find_u64(b, 60), 64); }),
                  KILN_ERR_FORMAT, "nbytes is 64, but shape [5, 3] of F32 needs 60");
  const uint64_t off3 = file_offset(3);
  expect_rejected(
      patched("misaligned", [&](std::string& b) { put_u64(b, find_u64(b, off3), off3 + 4); }),
      KILN_ERR_FORMAT, "not a multiple of 64");
  expect_rejected(
      patched("past-end", [&](std::string& b) { put_u64(b, find_u64(b, off3), 1ull << 40); }),
      KILN_ERR_FORMAT, "runs past the end");
  expect_rejected(
      patched("wrapping", [&](std::string& b) { put_u64(b, find_u64(b, off3), ~63ull); }),
      KILN_ERR_FORMAT, "runs past the end");
  expect_rejected(
      patched("in-manifest", [&](std::string& b) { put_u64(b, find_u64(b, off3), 64); }),
      KILN_ERR_FORMAT, "inside the header and manifest");
  const uint64_t off2 = file_offset(2);
  expect_rejected(
      patched("overlap", [&](std::string& b) { put_u64(b, find_u64(b, off3), off2 + 64); }),
      KILN_ERR_FORMAT, "overlaps");
}

// Manifests with values a well-behaved writer never produces, written with the generated builder.
fs::path write_manifest(const fs::path& path, uint32_t version, uint8_t kind, int64_t dim) {
  flatbuffers::FlatBufferBuilder b;
  const auto options = ckpt::CreateTrainerOptions(b);
  const std::vector<int64_t> shape = {dim};
  const auto t = ckpt::CreateTensorDirect(b, "w", static_cast<ckpt::TensorKind>(kind),
                                          ckpt::DType::F32, &shape, 64 * 4, 4);
  const std::vector<flatbuffers::Offset<ckpt::Tensor>> list = {t};
  const auto m = ckpt::CreateManifest(b, version, b.CreateString("{}"), 0, 0, options, 0, 0, 0,
                                      b.CreateVector(list));
  ckpt::FinishManifestBuffer(b, m);
  std::string bytes = "KILNCKPT";
  bytes.resize(16);
  put_u64(bytes, 8, b.GetSize());
  bytes.append(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
  bytes.resize(64 * 4 + 4, '\0');
  test::write_file(path, bytes);
  return path;
}

TEST(Checkpoint, VersionEnumAndShapeChecks) {
  const fs::path dir = test::temp_dir("ckpt-fields");
  EXPECT_EQ(open_result(write_manifest(dir / "ok", 1, 0, 1)).first, KILN_OK);
  expect_rejected(write_manifest(dir / "v3", 3, 0, 1), KILN_ERR_UNSUPPORTED, "format_version is 3");
  expect_rejected(write_manifest(dir / "v0", 0, 0, 1), KILN_ERR_FORMAT, "format_version is 0");
  expect_rejected(write_manifest(dir / "kind", 1, 9, 1), KILN_ERR_UNSUPPORTED, "kind is 9");
  expect_rejected(write_manifest(dir / "dim", 1, 0, -1), KILN_ERR_FORMAT, "shape[0]");
}

TEST(Checkpoint, RandomCorruptionNeverCrashes) {
  const fs::path dir = test::temp_dir("ckpt-fuzz");
  save_checkpoint(dir / "good", make_sample().contents);
  const std::string good = test::read_file(dir / "good");
  std::mt19937 rng(123);
  int rejected = 0;
  for (int i = 0; i < 400; ++i) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Mostly the header and manifest, where the structure lives.
      const size_t at = rng() % std::min<size_t>(bytes.size(), 900);
      bytes[at] = static_cast<char>(rng());
    }
    test::write_file(dir / "bad", bytes);
    const auto [status, message] = open_result(dir / "bad");
    if (status != KILN_OK) {
      ++rejected;
      EXPECT_TRUE(status == KILN_ERR_FORMAT || status == KILN_ERR_UNSUPPORTED) << message;
    }
  }
  EXPECT_GT(rejected, 0);
}

TEST(Checkpoint, FailedSaveLeavesThePreviousCheckpointIntact) {
  const fs::path dir = test::temp_dir("ckpt-atomic");
  const fs::path path = dir / "run.kckpt";
  const Sample old_sample = make_sample(1);
  save_checkpoint(path, old_sample.contents);
  const std::string old_bytes = test::read_file(path);

  // 1. The temporary file cannot be created (a directory stands in its way).
  const fs::path temp = fs::path(path.string() + ".tmp." + std::to_string(::getpid()));
  fs::create_directory(temp);
  try {
    save_checkpoint(path, make_sample(2).contents);
    ADD_FAILURE() << "save succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_IO);
    EXPECT_NE(std::string(e.what()).find(temp.string()), std::string::npos) << e.what();
  }
  fs::remove(temp);
  EXPECT_EQ(test::read_file(path), old_bytes);

  // 2. The write dies half-way: a file-size limit below the new checkpoint's size makes write(2)
  // fail with EFBIG after part of the file is on disk (SIGXFSZ ignored so the process survives).
  Sample big = make_sample(3);
  big.add("big", TensorKind::Value, DType::F32, {64, 1024}, 9);
  struct rlimit saved {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  struct sigaction ignore {
  }, previous{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(sigaction(SIGXFSZ, &ignore, &previous), 0);
  struct rlimit limited = saved;
  limited.rlim_cur = 64 * 1024;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limited), 0);
  kiln_status status = KILN_OK;
  std::string message;
  try {
    save_checkpoint(path, big.contents);
  } catch (const Error& e) {
    status = e.status();
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  sigaction(SIGXFSZ, &previous, nullptr);
  EXPECT_EQ(status, KILN_ERR_IO) << message;
  EXPECT_NE(message.find("failed at byte"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(temp)) << "temporary file left behind";
  EXPECT_EQ(test::read_file(path), old_bytes);
  expect_same(old_sample.contents, LoadedCheckpoint::open(path)->contents());

  // 3. A successful save replaces it.
  save_checkpoint(path, big.contents);
  expect_same(big.contents, LoadedCheckpoint::open(path)->contents());
}

}  // namespace
}  // namespace kiln
