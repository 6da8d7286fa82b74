#include "train/init.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>

#include "core/error.hpp"

namespace kiln::train {

namespace {

constexpr double kInitializerRange = 0.02;  // LlamaConfig / GPT2Config default

// SplitMix64 (Steele, Lea, Flood 2014): a tiny generator whose output is fixed by its seed on
// every platform, unlike std::normal_distribution.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1]: 53 random bits, never 0 (log of it is finite).
  double uniform() { return (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53; }
  // Standard normal by Box–Muller (one value per pair of uniforms; simple and platform-exact).
  double normal() {
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }

 private:
  uint64_t state_;
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

bool ends_with(const std::string& s, const char* suffix) {
  const std::string t(suffix);
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

enum class Family { Llama, Gpt2, NanoChat };

Family family_of(const ModelConfig& c) {
  if (c.norm == NormKind::LayerNorm) return Family::Gpt2;
  if (c.norm == NormKind::RmsNormNoWeight) return Family::NanoChat;
  return Family::Llama;
}

// Standard deviation of a normal init for `spec`; 0 means zeros. Norm weights are handled apart.
double init_std(const ModelConfig& c, Family family, const ParamSpec& spec) {
  const bool residual_projection = ends_with(spec.name, "self_attn.o_proj.weight") ||
                                   ends_with(spec.name, "mlp.down_proj.weight");
  switch (family) {
    case Family::Llama:
      return kInitializerRange;
    case Family::Gpt2:
      if (residual_projection) return kInitializerRange / std::sqrt(2.0 * c.n_layers);
      return kInitializerRange;
    case Family::NanoChat: {
      if (spec.role == ParamRole::Embedding) return 1.0;
      if (spec.role == ParamRole::Head || residual_projection) return 0.0;
      const auto fan_out = static_cast<double>(spec.shape[0]);
      const auto fan_in = static_cast<double>(spec.shape[1]);
      return 1.0 / std::sqrt(fan_in) * std::min(1.0, std::sqrt(fan_out / fan_in));
    }
  }
  return kInitializerRange;
}

}  // namespace

void init_params(const ModelConfig& config, const ParamLayout& layout, uint64_t seed,
                 std::span<float> values) {
  if (static_cast<int64_t>(values.size()) != layout.total()) {
    fail(KILN_ERR_INVALID_ARGUMENT, "init_params: buffer holds " + std::to_string(values.size()) +
                                        " elements, the layout " + std::to_string(layout.total()));
  }
  std::fill(values.begin(), values.end(), 0.0f);
  const Family family = family_of(config);
  const auto& specs = layout.specs();
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    float* dst = values.data() + s.offset;
    if (s.role == ParamRole::Bias) continue;  // zeros
    if (s.role == ParamRole::Norm) {
      std::fill(dst, dst + s.numel, 1.0f);
      continue;
    }
    const double std_dev = init_std(config, family, s);
    if (std_dev == 0.0) continue;
    SplitMix64 rng(seed ^ fnv1a(s.name));
    for (int64_t j = 0; j < s.numel; ++j) dst[j] = static_cast<float>(std_dev * rng.normal());
  }
}

}  // namespace kiln::train
