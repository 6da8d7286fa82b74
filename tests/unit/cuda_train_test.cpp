// The CUDA trainer against independent references: PyTorch's float32 20-step AdamW curves and its
// float64 gradients (tests/fixtures/train/, make_train_fixtures.py), and the CPU trainer (itself
// checked against PyTorch to 1e-4) where no PyTorch number exists (MTP heads, masked batches).
// The GPU computes in BF16 with float32 accumulation and master weights (torch.autocast's recipe),
// so the tolerances are BF16's: losses within 2e-2 relative (the issue's figure), gradient norms
// within 5e-2 relative (a BF16 gradient's per-element error is ~2⁻⁸ and the norm sums many of them
// with partly cancelling signs), per-tensor gradients within 3e-2 relative L2. What must be exact
// is exact: a resumed run is bit-identical, masked targets change nothing. Muon (g-j) follows the
// CPU trainer's Muon within the same loss bound. Without a GPU every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backend/cuda/device_memory.hpp"
#include "backend/cuda/train/cuda_engine.hpp"
#include "cuda_test_util.hpp"
#include "formats/safetensors.hpp"
#include "kiln.h"
#include "model/config.hpp"
#include "test_support.hpp"
#include "train/hf_export.hpp"
#include "train/import.hpp"
#include "train/model_layout.hpp"
#include "train/train_engine.hpp"

namespace kiln {
namespace {

namespace fs = std::filesystem;

#define KILN_ASSERT_OK(call) ASSERT_EQ((call), KILN_OK) << #call << ": " << kiln_last_error()

struct RuntimeDel {
  void operator()(kiln_runtime* r) const { kiln_runtime_free(r); }
};
struct ModelDel {
  void operator()(kiln_model* m) const { kiln_model_free(m); }
};
struct TrainerDel {
  void operator()(kiln_trainer* t) const { kiln_trainer_free(t); }
};
using RuntimePtr = std::unique_ptr<kiln_runtime, RuntimeDel>;
using ModelPtr = std::unique_ptr<kiln_model, ModelDel>;
using TrainerPtr = std::unique_ptr<kiln_trainer, TrainerDel>;

fs::path family_dir(const std::string& family) { return test::fixtures_dir() / "train" / family; }

RuntimePtr runtime(kiln_backend backend, uint64_t memory_limit = 0) {
  kiln_runtime_options o;
  EXPECT_EQ(kiln_runtime_options_default(&o, sizeof o), KILN_OK);
  o.backend = backend;
  o.n_threads = 2;
  o.device_memory_limit = memory_limit;
  kiln_runtime* rt = nullptr;
  const kiln_status st = kiln_runtime_create(&o, &rt);
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return RuntimePtr(rt);
}

ModelPtr load(kiln_runtime* rt, const fs::path& dir) {
  kiln_model* m = nullptr;
  const kiln_status st = kiln_model_load(rt, dir.string().c_str(), nullptr, &m);
  EXPECT_EQ(st, KILN_OK) << dir << ": " << kiln_last_error();
  return ModelPtr(m);
}

nlohmann::json read_json(const fs::path& p) { return nlohmann::json::parse(test::read_file(p)); }

kiln_trainer_options curve_options(const nlohmann::json& curve) {
  kiln_trainer_options o;
  EXPECT_EQ(kiln_trainer_options_default(&o, sizeof o), KILN_OK);
  o.learning_rate = curve.at("lr").get<float>();
  o.beta1 = curve.at("betas")[0].get<float>();
  o.beta2 = curve.at("betas")[1].get<float>();
  o.epsilon = curve.at("eps").get<float>();
  o.weight_decay = curve.at("weight_decay").get<float>();
  o.max_grad_norm = curve.at("max_grad_norm").get<float>();
  o.schedule = KILN_LR_CONSTANT;
  return o;
}

TrainerPtr make_trainer(const kiln_model* model, const kiln_trainer_options& o) {
  kiln_trainer* t = nullptr;
  const kiln_status st = kiln_trainer_create(model, &o, &t);
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return TrainerPtr(t);
}

double rel(double got, double want) {
  return std::abs(got - want) / std::max(std::abs(want), 1e-12);
}

struct Step {
  std::vector<int32_t> inputs, targets;
};
std::vector<Step> curve_steps(const nlohmann::json& curve) {
  std::vector<Step> out;
  for (const auto& s : curve.at("steps")) {
    out.push_back(
        {s.at("inputs").get<std::vector<int32_t>>(), s.at("targets").get<std::vector<int32_t>>()});
  }
  return out;
}

kiln_train_result step(kiln_trainer* t, int32_t B, int32_t T, const Step& s,
                       const uint8_t* mask = nullptr, const float* weights = nullptr) {
  kiln_batch batch = {sizeof batch, B, T, s.inputs.data(), s.targets.data(), mask, weights};
  kiln_train_result r{};
  r.struct_size = sizeof r;
  const kiln_status st = kiln_train_step(t, &batch, &r);
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return r;
}

std::vector<char> file_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

class CudaTrain : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

// (a) 20 AdamW steps with clipping against PyTorch's float32 curve. Losses within the issue's BF16
// tolerance (2e-2). Gradient norms are more sensitive: a BF16 run drifts from the float32 one as
// the steps compound rounding, and PyTorch's own BF16 run of the same steps (curve_bf16.json,
// make_train_fixtures.py --bf16-curves: torch.autocast(bfloat16) on the GPU) measures how far.
// kiln may drift at most twice as far as PyTorch's BF16 run has by that step, and never less
// than 5e-2.
TEST_P(CudaTrain, TwentyAdamWStepsFollowPyTorchWithinBf16) {
  const fs::path dir = family_dir(GetParam());
  const auto curve = read_json(dir / "curve.json");
  const auto torch_bf16 = read_json(dir / "curve_bf16.json");
  ASSERT_EQ(torch_bf16.at("steps").size(), curve.at("steps").size());
  double torch_drift = 0;  // PyTorch BF16 vs float32 grad-norm drift, worst so far
  auto rt = runtime(KILN_BACKEND_CUDA);
  ASSERT_TRUE(rt);
  auto model = load(rt.get(), dir);
  ASSERT_TRUE(model);
  auto trainer = make_trainer(model.get(), curve_options(curve));
  ASSERT_TRUE(trainer);
  const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
  int i = 0;
  double worst_loss = 0, worst_norm = 0;
  for (const auto& s : curve.at("steps")) {
    const auto r = step(trainer.get(), B, T, curve_steps(curve)[static_cast<size_t>(i)]);
    const double loss = s.at("loss"), norm = s.at("grad_norm");
    const double torch_norm = torch_bf16.at("steps")[static_cast<size_t>(i)].at("grad_norm");
    torch_drift = std::max(torch_drift, rel(torch_norm, norm));
    const double norm_bound = std::max(5e-2, 2 * torch_drift);
    worst_loss = std::max(worst_loss, rel(r.loss, loss));
    worst_norm = std::max(worst_norm, rel(r.grad_norm, norm));
    EXPECT_LE(rel(r.loss, loss), 2e-2)
        << GetParam() << " step " << i << ": loss " << r.loss << " vs PyTorch " << loss;
    EXPECT_LE(rel(r.grad_norm, norm), norm_bound)
        << GetParam() << " step " << i << ": grad norm " << r.grad_norm << " vs PyTorch float32 "
        << norm << " (PyTorch BF16 " << torch_norm << "; bound " << norm_bound << ")";
    EXPECT_EQ(r.step, i + 1);
    ++i;
  }
  EXPECT_EQ(i, 20);
  std::printf(
      "[ parity %s ] 20 steps: worst loss rel err %.3e, worst grad-norm rel err %.3e (PyTorch's "
      "own "
      "BF16 run: %.3e)\n",
      GetParam(), worst_loss, worst_norm, torch_drift);
}

// (b) One masked, weighted batch: every parameter's gradient against PyTorch's float64 autograd,
// mapped to HF names by the export mapping; and two runs are bit-identical (deterministic kernels).
TEST_P(CudaTrain, GradientsMatchPyTorchFloat64PerTensor) {
  const fs::path dir = family_dir(GetParam());
  const ModelConfig config = load_model_config(dir);
  const auto weights = WeightSet::open_dir(dir);
  const ParamLayout layout = train::make_param_layout(config);
  std::vector<float> values(static_cast<size_t>(layout.total()), 0.0f);
  train::import_hf_weights(config, layout, *weights, values);
  TrainerOptions options;
  Optimizer optimizer(layout, options.optimizer, 1);
  const train::TrainState state{config, layout, options, values, optimizer};
  auto alloc = cuda::DeviceAllocator::create(0, 0, "test GPU");
  auto engine = cuda::train::make_cuda_engine(state, alloc);

  const auto j = read_json(dir / "batch.json");
  const int64_t B = j.at("batch_size"), T = j.at("seq_len");
  const auto inputs = j.at("inputs").get<std::vector<int32_t>>();
  const auto targets = j.at("targets").get<std::vector<int32_t>>();
  const auto mask = j.at("loss_mask").get<std::vector<uint8_t>>();
  const auto w = j.at("loss_weights").get<std::vector<float>>();
  const train::TrainBatch batch{inputs, targets, mask, w};
  const auto normalisers = train::loss_weight_totals(config, batch, T);

  std::vector<std::vector<float>> runs;
  for (int run = 0; run < 2; ++run) {
    engine->reserve(B, T);
    engine->zero_grads();
    const auto losses = engine->forward_backward(batch, normalisers, {}, {}, nullptr);
    const double loss = losses[0].loss_sum / losses[0].weight_sum;
    EXPECT_LE(rel(loss, j.at("loss").get<double>()), 2e-2)
        << GetParam() << ": loss " << loss << " vs PyTorch float64 " << j.at("loss").get<double>();
    runs.emplace_back(static_cast<size_t>(layout.total()));
    engine->download_grads(runs.back());
  }
  EXPECT_TRUE(runs[0] == runs[1]) << GetParam() << ": two identical backward passes differ";

  const auto ours = hf_tensors(config, layout, runs[0].data());
  const auto ref = SafetensorsFile::open(dir / "grads.safetensors");
  double worst = 0;
  std::string worst_name;
  for (const HfTensor& t : ours) {
    const auto it = ref->tensors().find(t.name);
    ASSERT_NE(it, ref->tensors().end()) << GetParam() << ": PyTorch has no gradient for " << t.name;
    const TensorView& r = it->second;
    ASSERT_EQ(r.shape, t.shape) << t.name;
    const auto* expect = reinterpret_cast<const float*>(r.data);
    double num = 0, den = 0, max_abs = 0;
    int64_t where = 0;
    for (int64_t i = 0; i < r.numel(); ++i) {
      const double d = double(t.data()[i]) - double(expect[i]);
      num += d * d;
      den += double(expect[i]) * double(expect[i]);
      if (std::abs(d) > max_abs) max_abs = std::abs(d), where = i;
    }
    const double e = std::sqrt(num / std::max(den, 1e-30));
    if (e > worst) worst = e, worst_name = t.name;
    EXPECT_LE(e, 3e-2) << GetParam() << " " << t.name << ": relative L2 error " << e
                       << ", max abs error " << max_abs << " at element " << where << " (GPU "
                       << t.data()[where] << ", PyTorch " << expect[where] << ")";
  }
  std::printf("[ grads %s ] worst per-tensor relative L2 error %.3e (%s)\n", GetParam(), worst,
              worst_name.c_str());
}

INSTANTIATE_TEST_SUITE_P(Families, CudaTrain,
                         ::testing::Values("llama", "qwen3", "gpt2", "nanochat"),
                         [](const auto& info) { return std::string(info.param); });

class CudaTrainer : public ::testing::Test {
 protected:
  void SetUp() override { KILN_SKIP_WITHOUT_CUDA(); }
};

// 4 steps == 2 steps + save + load + 2 steps on a CUDA runtime, to the bit: the losses (the
// interrupted run's first two too) and the final checkpoint files. `what` names the state the
// checkpoint holds, for the failure message.
void expect_resume_bit_identical(const char* family, const kiln_trainer_options& options,
                                 const std::string& tag, const char* what) {
  const fs::path dir = family_dir(family);
  const auto curve = read_json(dir / "curve.json");
  const auto steps = curve_steps(curve);
  const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
  auto rt = runtime(KILN_BACKEND_CUDA);
  auto model = load(rt.get(), dir);
  ASSERT_TRUE(model);
  const fs::path tmp = fs::temp_directory_path() / ("kiln_cuda_" + tag + "_" + family);
  fs::create_directories(tmp);

  auto a = make_trainer(model.get(), options);
  std::vector<double> full;
  for (int i = 0; i < 4; ++i) full.push_back(step(a.get(), B, T, steps[i]).loss);
  KILN_ASSERT_OK(kiln_checkpoint_save(a.get(), (tmp / "full.ckpt").string().c_str()));

  auto b = make_trainer(model.get(), options);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(step(b.get(), B, T, steps[i]).loss, full[i]) << family << ": not deterministic";
  }
  KILN_ASSERT_OK(kiln_checkpoint_save(b.get(), (tmp / "half.ckpt").string().c_str()));
  b.reset();
  kiln_trainer* raw = nullptr;
  KILN_ASSERT_OK(kiln_checkpoint_load(rt.get(), (tmp / "half.ckpt").string().c_str(), &raw));
  TrainerPtr c(raw);
  for (int i = 2; i < 4; ++i) {
    const double loss = step(c.get(), B, T, steps[i]).loss;
    EXPECT_EQ(loss, full[i]) << family << " step " << i << " after resume";
  }
  KILN_ASSERT_OK(kiln_checkpoint_save(c.get(), (tmp / "resumed.ckpt").string().c_str()));
  EXPECT_TRUE(file_bytes(tmp / "full.ckpt") == file_bytes(tmp / "resumed.ckpt"))
      << family << ": the resumed run's checkpoint (" << what
      << ") differs from the uninterrupted run's";
  fs::remove_all(tmp);
}

// (c) 4 steps == 2 steps + save + load + 2 steps, to the bit: losses and the final checkpoint.
TEST_F(CudaTrainer, ResumeIsBitIdentical) {
  for (const char* family : {"llama", "gpt2"}) {
    const auto curve = read_json(family_dir(family) / "curve.json");
    expect_resume_bit_identical(family, curve_options(curve), "resume", "values + AdamW moments");
  }
}

// (d) Masked targets change nothing (bit for bit); a masked + weighted batch's loss and gradient
// norm agree with the CPU trainer's.
TEST_F(CudaTrainer, MasksAndWeightsFollowTheCpuTrainer) {
  const fs::path dir = family_dir("qwen3");
  const auto curve = read_json(dir / "curve.json");
  const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
  Step s = curve_steps(curve)[0];
  const size_t n = s.inputs.size();
  std::vector<uint8_t> mask(n, 1);
  std::vector<float> w(n, 1.0f);
  for (size_t i = 0; i < n; ++i) {
    if (i % 3 == 1) mask[i] = 0;
    w[i] = 0.25f + 0.5f * static_cast<float>(i % 4);
  }
  Step other = s;  // differs only where masked
  for (size_t i = 0; i < n; ++i) {
    if (mask[i] == 0) other.targets[i] = (s.targets[i] + 7) % 50;
  }
  auto gpu = runtime(KILN_BACKEND_CUDA);
  auto cpu = runtime(KILN_BACKEND_CPU);
  auto gm = load(gpu.get(), dir);
  auto cm = load(cpu.get(), dir);
  ASSERT_TRUE(gm && cm);
  auto t1 = make_trainer(gm.get(), curve_options(curve));
  auto t2 = make_trainer(gm.get(), curve_options(curve));
  auto tc = make_trainer(cm.get(), curve_options(curve));
  const auto r1 = step(t1.get(), B, T, s, mask.data(), w.data());
  const auto r2 = step(t2.get(), B, T, other, mask.data(), w.data());
  const auto rc = step(tc.get(), B, T, s, mask.data(), w.data());
  EXPECT_EQ(r1.loss, r2.loss) << "a masked target changed the loss";
  EXPECT_EQ(r1.grad_norm, r2.grad_norm) << "a masked target changed the gradient";
  const auto next1 = step(t1.get(), B, T, s, mask.data(), w.data());
  const auto next2 = step(t2.get(), B, T, s, mask.data(), w.data());
  EXPECT_EQ(next1.loss, next2.loss) << "a masked target changed the update";
  EXPECT_EQ(r1.n_tokens, rc.n_tokens);
  EXPECT_DOUBLE_EQ(r1.weight_sum, rc.weight_sum);
  EXPECT_LE(rel(r1.loss, rc.loss), 2e-2) << "GPU " << r1.loss << " vs CPU " << rc.loss;
  EXPECT_LE(rel(r1.grad_norm, rc.grad_norm), 5e-2)
      << "GPU " << r1.grad_norm << " vs CPU " << rc.grad_norm;
}

// (d2) Residual dropout: the GPU draws the CPU trainer's masks (kernel level: bit for bit in
// cuda_train_kernels_test). Three steps with p = 0.2 follow the CPU within the BF16 bound, and on
// the first step (same weights on both) the GPU's loss is much nearer the CPU's with the same seed
// than the CPU's with another seed (other masks) — so a GPU drawing other masks fails here.
TEST_F(CudaTrainer, ResidualDropoutFollowsTheCpuTrainer) {
  for (const char* family : {"llama", "gpt2", "nanochat"}) {
    const fs::path dir = family_dir(family);
    const auto curve = read_json(dir / "curve.json");
    const auto steps = curve_steps(curve);
    const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
    auto gpu = runtime(KILN_BACKEND_CUDA);
    auto cpu = runtime(KILN_BACKEND_CPU);
    auto gm = load(gpu.get(), dir);
    auto cm = load(cpu.get(), dir);
    ASSERT_TRUE(gm && cm);
    auto o = curve_options(curve);
    o.residual_dropout = 0.2f;
    auto other = o;
    other.seed = o.seed + 1;
    auto tg = make_trainer(gm.get(), o);
    auto tc = make_trainer(cm.get(), o);
    auto tc_other = make_trainer(cm.get(), other);
    const double other_first = step(tc_other.get(), B, T, steps[0]).loss;
    for (int i = 0; i < 3; ++i) {
      const auto rg = step(tg.get(), B, T, steps[i]);
      const auto rc = step(tc.get(), B, T, steps[i]);
      std::printf("[ dropout %s ] step %d: GPU %.6f CPU %.6f", family, i + 1, rg.loss, rc.loss);
      if (i == 0) std::printf(" (CPU, other masks: %.6f)", other_first);
      std::printf("\n");
      EXPECT_LE(rel(rg.loss, rc.loss), 2e-2) << family << " step " << i + 1;
      EXPECT_LE(rel(rg.grad_norm, rc.grad_norm), 5e-2) << family << " step " << i + 1;
      if (i == 0) {
        EXPECT_LT(std::abs(rg.loss - rc.loss), 0.5 * std::abs(other_first - rc.loss))
            << family << ": the GPU's first-step loss is not nearer the CPU's with its masks";
      }
    }
  }
}

// (e) A trainer that does not fit under device_memory_limit is KILN_ERR_OUT_OF_MEMORY naming the
// bytes, leaves nothing behind, and a trainer that fits then works on the same runtime.
TEST_F(CudaTrainer, OutOfMemoryUnderTheLimitThenASmallTrainerWorks) {
  // ~45 M parameters: 90 MB of BF16 inference weights, ~720 MB of trainer state.
  const std::string big = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4,
    "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 32000,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": false})";
  const uint64_t limit = uint64_t{400} << 20;
  auto rt = runtime(KILN_BACKEND_CUDA, limit);
  ASSERT_TRUE(rt);
  kiln_model* raw = nullptr;
  KILN_ASSERT_OK(kiln_model_create(rt.get(), big.data(), big.size(), nullptr, &raw));
  ModelPtr model(raw);
  kiln_trainer_options o;
  KILN_ASSERT_OK(kiln_trainer_options_default(&o, sizeof o));
  kiln_trainer* t = nullptr;
  EXPECT_EQ(kiln_trainer_create(model.get(), &o, &t), KILN_ERR_OUT_OF_MEMORY) << kiln_last_error();
  EXPECT_EQ(t, nullptr);
  const std::string message = kiln_last_error();
  EXPECT_NE(message.find("bytes"), std::string::npos) << message;
  std::printf("[ oom ] %s\n", message.c_str());

  // What the failed trainer took must be back: with the big model freed, a ~11 M-parameter
  // trainer (~260 MB with its inference copy) fits under the cap only if the ~180 MB the failed
  // one took for its weights were returned.
  model.reset();
  const std::string medium = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 16000,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": false})";
  KILN_ASSERT_OK(kiln_model_create(rt.get(), medium.data(), medium.size(), nullptr, &raw));
  ModelPtr fits(raw);
  auto trainer = make_trainer(fits.get(), o);
  ASSERT_TRUE(trainer) << "after an out-of-memory failure a trainer that fits must be created";
  Step s;
  for (int i = 0; i < 2 * 16 + 1; ++i) s.inputs.push_back((i * 7919) % 16000);
  s.targets.assign(s.inputs.begin() + 1, s.inputs.end());
  s.inputs.pop_back();
  const auto r = step(trainer.get(), 2, 16, s);
  // A fresh model predicts nearly uniformly: the loss is close to ln(vocab).
  EXPECT_NEAR(r.loss, std::log(16000.0), 0.1 * std::log(16000.0)) << "loss " << r.loss;
}

// (f) MTP heads: the first step's main and per-head losses and gradient norm against the CPU
// trainer (same seed, so the same head initialisation).
TEST_F(CudaTrainer, MtpHeadsFollowTheCpuTrainer) {
  for (const char* family : {"llama", "nanochat"}) {
    const fs::path dir = family_dir(family);
    const auto curve = read_json(dir / "curve.json");
    const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
    auto gpu = runtime(KILN_BACKEND_CUDA);
    auto cpu = runtime(KILN_BACKEND_CPU);
    auto gm = load(gpu.get(), dir);
    auto cm = load(cpu.get(), dir);
    ASSERT_TRUE(gm && cm);
    kiln_trainer_options o = curve_options(curve);
    o.n_mtp_heads = 2;
    o.mtp_loss_weights[0] = 0.5f;
    o.mtp_loss_weights[1] = 0.25f;
    auto tg = make_trainer(gm.get(), o);
    auto tc = make_trainer(cm.get(), o);
    ASSERT_TRUE(tg && tc);
    const Step s = curve_steps(curve)[0];
    for (int k = 0; k < 2; ++k) {  // two steps: the second sees the first update
      const auto rg = step(tg.get(), B, T, s);
      const auto rc = step(tc.get(), B, T, s);
      EXPECT_LE(rel(rg.loss, rc.loss), 2e-2)
          << family << " step " << k << " main loss GPU " << rg.loss << " CPU " << rc.loss;
      for (int h = 0; h < 2; ++h) {
        EXPECT_LE(rel(rg.mtp_losses[h], rc.mtp_losses[h]), 2e-2)
            << family << " step " << k << " MTP head " << h + 1 << " GPU " << rg.mtp_losses[h]
            << " CPU " << rc.mtp_losses[h];
      }
      EXPECT_LE(rel(rg.grad_norm, rc.grad_norm), 5e-2)
          << family << " step " << k << " grad norm GPU " << rg.grad_norm << " CPU "
          << rc.grad_norm;
    }
  }
}

// Forward outputs (logits after the soft-cap, trunk hidden) against the CPU trainer's.
TEST_F(CudaTrainer, ForwardLogitsFollowTheCpuTrainer) {
  for (const char* family : {"gpt2", "nanochat"}) {
    const fs::path dir = family_dir(family);
    const auto curve = read_json(dir / "curve.json");
    const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
    auto gpu = runtime(KILN_BACKEND_CUDA);
    auto cpu = runtime(KILN_BACKEND_CPU);
    auto gm = load(gpu.get(), dir);
    auto cm = load(cpu.get(), dir);
    ASSERT_TRUE(gm && cm);
    auto tg = make_trainer(gm.get(), curve_options(curve));
    auto tc = make_trainer(cm.get(), curve_options(curve));
    const Step s = curve_steps(curve)[0];
    for (kiln_trainer_output what : {KILN_TRAINER_OUTPUT_LOGITS, KILN_TRAINER_OUTPUT_HIDDEN}) {
      size_t needed = 0;
      ASSERT_EQ(kiln_trainer_forward(tg.get(), s.inputs.data(), B, T, what, nullptr, 0, &needed),
                KILN_ERR_BUFFER_TOO_SMALL);  // the size query (kiln.h: caller-owned buffers)
      ASSERT_GT(needed, 0u);
      std::vector<float> g(needed, NAN), c(needed, NAN);
      KILN_ASSERT_OK(
          kiln_trainer_forward(tg.get(), s.inputs.data(), B, T, what, g.data(), g.size(), &needed));
      KILN_ASSERT_OK(
          kiln_trainer_forward(tc.get(), s.inputs.data(), B, T, what, c.data(), c.size(), &needed));
      const double e = test::relative_l2(g.data(), c.data(), g.size());
      EXPECT_LE(e, 2e-2) << family << (what == KILN_TRAINER_OUTPUT_LOGITS ? " logits" : " hidden")
                         << ": relative L2 error GPU vs CPU " << e;
    }
  }
}

// Muon on the GPU (nanochat's recipe: Muon on the block matrices, AdamW on the rest) against the
// CPU trainer, whose Muon is checked in train_optim_test; the kernels are checked against float64
// in cuda_train_muon_test.
kiln_trainer_options muon_options(const nlohmann::json& curve) {
  kiln_trainer_options o = curve_options(curve);
  o.optimizer = KILN_OPTIMIZER_MUON;  // Muon's own settings at their defaults (lr 0.02, 0.95, 5)
  return o;
}

// (g) 20 steps of the fixture curve with Muon: losses within the BF16 bound of the CPU's, and the
// first step's gradient norm (same weights on both) within the gradient-norm bound.
TEST_F(CudaTrainer, MuonFollowsTheCpuTrainer) {
  for (const char* family : {"llama", "qwen3", "gpt2", "nanochat"}) {
    const fs::path dir = family_dir(family);
    const auto curve = read_json(dir / "curve.json");
    const auto steps = curve_steps(curve);
    const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
    auto gpu = runtime(KILN_BACKEND_CUDA);
    auto cpu = runtime(KILN_BACKEND_CPU);
    auto gm = load(gpu.get(), dir);
    auto cm = load(cpu.get(), dir);
    ASSERT_TRUE(gm && cm);
    auto tg = make_trainer(gm.get(), muon_options(curve));
    auto tc = make_trainer(cm.get(), muon_options(curve));
    ASSERT_TRUE(tg && tc);
    double worst = 0.0;
    for (size_t i = 0; i < steps.size(); ++i) {
      const auto rg = step(tg.get(), B, T, steps[i]);
      const auto rc = step(tc.get(), B, T, steps[i]);
      worst = std::max(worst, rel(rg.loss, rc.loss));
      EXPECT_LE(rel(rg.loss, rc.loss), 2e-2)
          << family << " step " << i + 1 << ": GPU " << rg.loss << " CPU " << rc.loss;
      if (i == 0) {
        EXPECT_LE(rel(rg.grad_norm, rc.grad_norm), 5e-2)
            << family << ": grad norm GPU " << rg.grad_norm << " CPU " << rc.grad_norm;
      }
    }
    std::printf("[ muon %s ] %zu steps: worst loss rel err GPU vs CPU %.3e\n", family, steps.size(),
                worst);
  }
}

// (h) Muon alone: every AdamW-updated role frozen (group lr 0), one batch 20 times, so the whole
// fall of the loss is Muon's. Per step within the BF16 bound, and the area between the curve and
// the first loss, Σ (L₀ − L_k), within 10 % of the CPU's: on the CPU, Muon at half the learning
// rate gives 20-70 % less area on these models, and a GPU that skipped or mis-scaled Muon's
// update would be far off while every loss stayed within 2e-2 of ~4.5.
TEST_F(CudaTrainer, MuonAloneFollowsTheCpuTrainer) {
  static const kiln_param_group frozen[] = {{KILN_PARAM_EMBEDDING, 0.0f, -1.0f},
                                            {KILN_PARAM_POSITION, 0.0f, -1.0f},
                                            {KILN_PARAM_HEAD, 0.0f, -1.0f},
                                            {KILN_PARAM_NORM, 0.0f, -1.0f},
                                            {KILN_PARAM_BIAS, 0.0f, -1.0f}};
  for (const char* family : {"llama", "qwen3", "gpt2", "nanochat"}) {
    const fs::path dir = family_dir(family);
    const auto curve = read_json(dir / "curve.json");
    const Step s = curve_steps(curve)[0];
    const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
    auto gpu = runtime(KILN_BACKEND_CUDA);
    auto cpu = runtime(KILN_BACKEND_CPU);
    auto gm = load(gpu.get(), dir);
    auto cm = load(cpu.get(), dir);
    ASSERT_TRUE(gm && cm);
    kiln_trainer_options o = muon_options(curve);
    o.param_groups = frozen;
    o.n_param_groups = std::size(frozen);
    auto tg = make_trainer(gm.get(), o);
    auto tc = make_trainer(cm.get(), o);
    ASSERT_TRUE(tg && tc);
    double first_g = 0.0, first_c = 0.0, area_g = 0.0, area_c = 0.0;
    std::printf("[ muon alone %s ] GPU / CPU:", family);
    for (int i = 0; i < 20; ++i) {
      const double lg = step(tg.get(), B, T, s).loss;
      const double lc = step(tc.get(), B, T, s).loss;
      if (i == 0) first_g = lg, first_c = lc;
      area_g += first_g - lg;
      area_c += first_c - lc;
      std::printf(" %.4f/%.4f", lg, lc);
      EXPECT_LE(rel(lg, lc), 2e-2)
          << family << " step " << i + 1 << ": GPU " << lg << " CPU " << lc;
    }
    std::printf("; area GPU %.4f CPU %.4f (rel err %.3e)\n", area_g, area_c, rel(area_g, area_c));
    EXPECT_GT(area_c, 1.0) << family << ": Muon alone barely trained on the CPU";
    EXPECT_LE(rel(area_g, area_c), 0.1)
        << family << ": Σ (L0 - Lk) GPU " << area_g << " vs CPU " << area_c;
  }
}

// (i) Muon resume: 4 steps == 2 steps + save + load + 2, to the bit: losses and the final
// checkpoint (values, the AdamW moments of the AdamW-updated tensors, the Muon momentum buffers).
TEST_F(CudaTrainer, MuonResumeIsBitIdentical) {
  for (const char* family : {"llama", "nanochat"}) {
    const auto curve = read_json(family_dir(family) / "curve.json");
    expect_resume_bit_identical(family, muon_options(curve), "muon_resume",
                                "values + AdamW moments + Muon momentum");
  }
}

// (j) A Muon checkpoint is the same file on both devices: saved after 3 steps on one, loaded on
// the other, the next 3 steps follow the run that stayed within the BF16 bound (both directions).
TEST_F(CudaTrainer, MuonCheckpointMovesBetweenDevices) {
  const fs::path dir = family_dir("llama");
  const auto curve = read_json(dir / "curve.json");
  const auto steps = curve_steps(curve);
  const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
  auto gpu = runtime(KILN_BACKEND_CUDA);
  auto cpu = runtime(KILN_BACKEND_CPU);
  const fs::path tmp = fs::temp_directory_path() / "kiln_cuda_muon_move";
  fs::create_directories(tmp);
  for (const bool from_gpu : {true, false}) {
    kiln_runtime* src = from_gpu ? gpu.get() : cpu.get();
    kiln_runtime* dst = from_gpu ? cpu.get() : gpu.get();
    auto model = load(src, dir);
    ASSERT_TRUE(model);
    auto stay = make_trainer(model.get(), muon_options(curve));
    for (int i = 0; i < 3; ++i) step(stay.get(), B, T, steps[i]);
    const std::string path = (tmp / "moved.ckpt").string();
    KILN_ASSERT_OK(kiln_checkpoint_save(stay.get(), path.c_str()));
    kiln_trainer* raw = nullptr;
    KILN_ASSERT_OK(kiln_checkpoint_load(dst, path.c_str(), &raw));
    TrainerPtr moved(raw);
    for (int i = 3; i < 6; ++i) {
      const double a = step(stay.get(), B, T, steps[i]).loss;
      const double b = step(moved.get(), B, T, steps[i]).loss;
      EXPECT_LE(rel(b, a), 2e-2) << (from_gpu ? "GPU -> CPU" : "CPU -> GPU") << " step " << i + 1
                                 << ": moved " << b << ", stayed " << a;
    }
  }
  fs::remove_all(tmp);
}

}  // namespace
}  // namespace kiln

#else

TEST(CudaTrain, NotBuilt) { GTEST_SKIP() << "built without CUDA (KILN_CUDA=OFF)"; }

#endif
