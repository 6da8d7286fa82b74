// Training parity through the public ABI against PyTorch: for tiny Llama (GQA, untied head), Qwen3
// (q/k norms, tied), GPT-2 and NanoChat models, 20 AdamW steps with global-norm clipping must give
// the losses and pre-clip gradient norms torch.optim.AdamW gave on the same weights and batches
// (tests/fixtures/train/make_train_fixtures.py ran transformers + PyTorch in float32). Every
// expected number here was computed by PyTorch, not by kiln.
#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

struct TrainerDeleter {
  void operator()(kiln_trainer* t) const { kiln_trainer_free(t); }
};
using TrainerPtr = std::unique_ptr<kiln_trainer, TrainerDeleter>;

class TrainParity : public ::testing::TestWithParam<const char*> {};

TEST_P(TrainParity, TwentyAdamWStepsMatchPyTorch) {
  const fs::path dir = fixtures() / "train" / GetParam();
  const auto curve = nlohmann::json::parse(read_file(dir / "curve.json"));
  auto rt = make_cpu_runtime();
  auto model = load(rt.get(), dir);
  ASSERT_TRUE(model);

  kiln_trainer_options o;
  KILN_ASSERT_OK(kiln_trainer_options_default(&o, sizeof o));
  o.learning_rate = curve.at("lr").get<float>();
  o.beta1 = curve.at("betas")[0].get<float>();
  o.beta2 = curve.at("betas")[1].get<float>();
  o.epsilon = curve.at("eps").get<float>();
  o.weight_decay = curve.at("weight_decay").get<float>();
  o.max_grad_norm = curve.at("max_grad_norm").get<float>();
  o.schedule = KILN_LR_CONSTANT;
  kiln_trainer* raw = nullptr;
  KILN_ASSERT_OK(kiln_trainer_create(model.get(), &o, &raw));
  TrainerPtr trainer(raw);

  const int32_t B = curve.at("batch_size"), T = curve.at("seq_len");
  int step = 0;
  for (const auto& s : curve.at("steps")) {
    const auto inputs = s.at("inputs").get<std::vector<int32_t>>();
    const auto targets = s.at("targets").get<std::vector<int32_t>>();
    kiln_batch batch = {sizeof batch, B, T, inputs.data(), targets.data(), nullptr, nullptr};
    kiln_train_result r{};
    r.struct_size = sizeof r;
    KILN_ASSERT_OK(kiln_train_step(trainer.get(), &batch, &r));
    const double loss = s.at("loss"), norm = s.at("grad_norm");
    EXPECT_NEAR(r.loss, loss, 1e-4 * loss) << GetParam() << " step " << step;
    EXPECT_NEAR(r.grad_norm, norm, 1e-4 * norm) << GetParam() << " step " << step;
    EXPECT_EQ(r.step, step + 1);
    EXPECT_EQ(r.n_tokens, B * T);
    ++step;
  }
  EXPECT_EQ(step, 20);
}

INSTANTIATE_TEST_SUITE_P(Families, TrainParity,
                         ::testing::Values("llama", "qwen3", "gpt2", "nanochat"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace kiln_abi_test
