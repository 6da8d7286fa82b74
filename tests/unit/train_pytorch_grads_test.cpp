// The training graph's gradients against PyTorch autograd: for tiny Llama, Qwen3, GPT-2 and
// NanoChat models (transformers' own classes) and one masked, weighted batch, d(loss)/d(param) of
// kiln's loss definition computed by PyTorch in float64 (tests/fixtures/train/, made by
// make_train_fixtures.py). kiln's gradients come out in its canonical layout and are mapped back
// to HF names and layouts (GPT-2's transposed, fused Conv1D) by hf_tensors, the export mapping.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "formats/safetensors.hpp"
#include "model/config.hpp"
#include "test_support.hpp"
#include "train/hf_export.hpp"
#include "train/import.hpp"
#include "train/model_layout.hpp"
#include "train/train_graph.hpp"

namespace kiln {
namespace {

template <class Real>
void check_family(const char* family, double grad_tol, double loss_tol) {
  const auto dir = test::source_dir() / "tests" / "fixtures" / "train" / family;
  const ModelConfig config = load_model_config(dir);
  const auto weights = WeightSet::open_dir(dir);
  const ParamLayout layout = train::make_param_layout(config);
  std::vector<float> values(static_cast<size_t>(layout.total()), 0.0f);
  train::import_hf_weights(config, layout, *weights, values);

  const auto j = nlohmann::json::parse(test::read_file(dir / "batch.json"));
  const int64_t B = j.at("batch_size"), T = j.at("seq_len");
  const auto inputs = j.at("inputs").get<std::vector<int32_t>>();
  const auto targets = j.at("targets").get<std::vector<int32_t>>();
  const auto mask = j.at("loss_mask").get<std::vector<uint8_t>>();
  const auto w = j.at("loss_weights").get<std::vector<float>>();
  train::TrainBatch batch{inputs, targets, mask, w};

  std::vector<Real> params(values.begin(), values.end()), grads(params.size(), Real(0));
  train::TrainGraph<Real> graph(config, B, T, 2);
  const auto normalisers = train::loss_weight_totals(config, batch, T);
  const auto losses = graph.forward_backward(params, grads, batch, normalisers, {});
  const double loss = losses[0].loss_sum / losses[0].weight_sum;
  EXPECT_NEAR(loss, j.at("loss").get<double>(), loss_tol) << family;

  // Gradients in HF layout through the export mapping (a float copy of them).
  std::vector<float> g32(grads.begin(), grads.end());
  const auto ours = hf_tensors(config, layout, g32.data());
  const auto ref = SafetensorsFile::open(dir / "grads.safetensors");
  size_t compared = 0;
  for (const HfTensor& t : ours) {
    const auto it = ref->tensors().find(t.name);
    ASSERT_NE(it, ref->tensors().end()) << family << ": PyTorch has no gradient for " << t.name;
    const TensorView& r = it->second;
    ASSERT_EQ(r.shape, t.shape) << t.name;
    const auto* expect = reinterpret_cast<const float*>(r.data);
    double num = 0, den = 0;
    for (int64_t i = 0; i < r.numel(); ++i) {
      const double d = double(t.data()[i]) - double(expect[i]);
      num += d * d;
      den += double(expect[i]) * double(expect[i]);
    }
    const double rel = std::sqrt(num / std::max(den, 1e-30));
    EXPECT_LE(rel, grad_tol) << family << " " << t.name << " relative L2 error " << rel;
    ++compared;
  }
  EXPECT_EQ(compared, ref->tensors().size()) << family << ": PyTorch has gradients kiln lacks";
}

class PyTorchGrads : public ::testing::TestWithParam<const char*> {};

// The production path: float32 forward/backward, the 1e-4 relative error.
TEST_P(PyTorchGrads, Float32WithinOneInTenThousand) { check_family<float>(GetParam(), 1e-4, 1e-5); }

// The same graph in float64 agrees with PyTorch's float64 to the rounding of the stored reference
// (float32) and of HF's float32 constants (RoPE frequencies): the maths is the same, not merely
// close.
TEST_P(PyTorchGrads, Float64AgreesToRounding) { check_family<double>(GetParam(), 1e-6, 1e-8); }

INSTANTIATE_TEST_SUITE_P(Families, PyTorchGrads,
                         ::testing::Values("llama", "qwen3", "gpt2", "nanochat"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace kiln
