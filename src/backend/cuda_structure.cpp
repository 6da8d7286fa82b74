#include "backend/cuda_structure.hpp"

#include <string>
#include <vector>

#include "core/error.hpp"

namespace kiln {

void require_cuda_structure(const ModelConfig& c) {
  std::vector<std::string> missing;
  if (c.norm == NormKind::LayerNorm) missing.emplace_back("LayerNorm");
  if (c.norm == NormKind::RmsNormNoWeight) missing.emplace_back("parameter-free RMSNorm");
  if (c.mlp == MlpKind::GeluTanh) missing.emplace_back("GELU-tanh MLP");
  if (c.mlp == MlpKind::ReluSquared) missing.emplace_back("ReLU² MLP");
  if (c.mlp_bias) missing.emplace_back("MLP biases");
  if (c.positions == PositionKind::Learned) missing.emplace_back("learned position embeddings");
  if (c.rope_reversed) missing.emplace_back("reversed RoPE rotation");
  if (c.qk_norm == QkNormKind::AfterRopeNoWeight) missing.emplace_back("q/k norm after RoPE");
  if (c.embed_norm) missing.emplace_back("embedding norm");
  if (c.logit_softcap > 0.0f) missing.emplace_back("logit soft-capping");
  if (missing.empty()) return;
  std::string list;
  for (const std::string& m : missing) list += (list.empty() ? "" : ", ") + m;
  fail(KILN_ERR_UNSUPPORTED, "the CUDA backend does not run " + c.architecture +
                                 " models: it does not implement " + list +
                                 "; load this model with the CPU backend (KILN_BACKEND_CPU)");
}

}  // namespace kiln
