// The training forward pass against transformers: each tests/fixtures/hf model imported with
// import_hf_weights (F32, F16, BF16, sharded, tied, Phi3's fused projections, Qwen2 biases, Qwen3
// q/k norm, llama3 RoPE scaling) and run by TrainGraph<float> must reproduce the logits HF
// computed in float32 (logits.bin), and its loss must equal the cross-entropy of those logits.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/safetensors.hpp"
#include "model/config.hpp"
#include "test_support.hpp"
#include "train/import.hpp"
#include "train/init.hpp"
#include "train/model_layout.hpp"
#include "train/train_graph.hpp"

namespace kiln::train {
namespace {

class TrainHfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainHfParity, ImportedForwardMatchesTransformersLogits) {
  const auto dir = test::fixtures_dir() / "hf" / GetParam();
  const auto ref = nlohmann::json::parse(test::read_file(dir / "ref.json"));
  const auto ids = ref.at("ids").get<std::vector<int32_t>>();
  const std::vector<float> want = test::read_f32_file(dir / "logits.bin");
  const ModelConfig config = load_model_config(dir);
  const auto weights = WeightSet::open_dir(dir);
  const auto seq = static_cast<int64_t>(ids.size());
  const int64_t V = config.vocab_size;
  ASSERT_EQ(want.size(), static_cast<size_t>(seq * V));

  TrainGraph<float> graph(config, 1, seq, 2);
  std::vector<float> params(graph.layout().total(), NAN);
  import_hf_weights(config, graph.layout(), *weights, params);
  for (const ParamSpec& s : graph.layout().specs()) {
    for (int64_t i = 0; i < s.numel; ++i) {
      ASSERT_TRUE(std::isfinite(params[s.offset + i])) << s.name << " not imported";
    }
  }

  std::vector<float> got(want.size());
  graph.forward_logits(params, ids, {got, {}, {}});
  EXPECT_LE(test::relative_l2(got.data(), want.data(), want.size()), 1e-5);
  const auto argmax = ref.at("logits_stats").at("argmax_per_position").get<std::vector<int64_t>>();
  for (int64_t t = 0; t < seq; ++t) {
    const float* row = got.data() + t * V;
    EXPECT_EQ(std::max_element(row, row + V) - row, argmax[t]) << "position " << t;
  }

  // The loss of next-token targets equals the mean cross-entropy of HF's logits (float64 here).
  std::vector<int32_t> targets(ids.begin() + 1, ids.end());
  targets.push_back(-1);
  double want_loss = 0;
  for (int64_t t = 0; t + 1 < seq; ++t) {
    double sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(static_cast<double>(want[t * V + v]));
    want_loss += std::log(sum) - want[t * V + targets[t]];
  }
  want_loss /= static_cast<double>(seq - 1);
  const auto losses = graph.forward_loss(params, TrainBatch{ids, targets, {}, {}});
  EXPECT_EQ(losses[0].tokens, seq - 1);
  EXPECT_NEAR(losses[0].loss_sum / losses[0].weight_sum, want_loss, 1e-5 * want_loss);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TrainHfParity,
                         ::testing::Values("llama3", "llama2", "mistral", "qwen2", "qwen3",
                                           "phi3"));

TEST(TrainHfImport, MtpHeadsKeepTheirInitialValues) {
  const auto dir = test::fixtures_dir() / "hf" / "qwen2";
  ModelConfig config = load_model_config(dir);
  config.n_mtp_heads = 1;
  const ParamLayout layout = make_param_layout(config);
  std::vector<float> init(layout.total()), values(layout.total());
  init_params(config, layout, 3, init);
  values = init;
  import_hf_weights(config, layout, *WeightSet::open_dir(dir), values);
  const ParamSpec& mtp = layout.at("model.mtp_heads.1.self_attn.q_proj.weight");
  const ParamSpec& layer = layout.at("model.layers.1.self_attn.q_proj.weight");
  EXPECT_TRUE(std::equal(values.begin() + mtp.offset, values.begin() + mtp.offset + mtp.numel,
                         init.begin() + mtp.offset));
  EXPECT_FALSE(std::equal(values.begin() + layer.offset,
                          values.begin() + layer.offset + layer.numel,
                          init.begin() + layer.offset));
}

}  // namespace
}  // namespace kiln::train
