// The CUDA backend's structural gate (built without nvcc): models whose structure the CUDA
// executor lacks are refused with KILN_ERR_UNSUPPORTED naming the architecture and the features.
#include "backend/cuda_structure.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/error.hpp"
#include "test_support.hpp"

namespace kiln {
namespace {

void expect_refused(const std::string& dir, const std::vector<std::string>& parts) {
  const ModelConfig c = load_model_config(std::string(KILN_FIXTURES_DIR) + "/hf/" + dir);
  try {
    require_cuda_structure(c);
    ADD_FAILURE() << dir << ": not refused";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_UNSUPPORTED);
    for (const auto& p : parts) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message lacks \"" << p << "\": " << e.what();
    }
  }
}

TEST(CudaStructure, RefusesGpt2NamingWhatIsMissing) {
  expect_refused("gpt2", {"GPT2LMHeadModel", "LayerNorm", "GELU-tanh", "learned position",
                          "MLP biases", "CPU backend"});
}

TEST(CudaStructure, RefusesNanoChatNamingWhatIsMissing) {
  expect_refused("nanochat",
                 {"NanoChatForCausalLM", "parameter-free RMSNorm", "ReLU²", "q/k norm after RoPE",
                  "embedding norm", "soft-capping", "reversed RoPE", "CPU backend"});
}

TEST(CudaStructure, AcceptsTheLlamaFamily) {
  for (const char* dir : {"llama3", "llama2", "mistral", "qwen2", "qwen3", "phi3"}) {
    const ModelConfig c = load_model_config(std::string(KILN_FIXTURES_DIR) + "/hf/" + dir);
    EXPECT_NO_THROW(require_cuda_structure(c)) << dir;
  }
}

}  // namespace
}  // namespace kiln
