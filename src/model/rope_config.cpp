#include "model/rope_config.hpp"

#include <cmath>
#include <numbers>

#include "core/error.hpp"

namespace kiln {

namespace {

using nlohmann::json;

// Scalings that reduce to the default RoPE when their factor is 1 (transformers'
// modeling_rope_utils: dynamic/ntk scale the base by a power of factor; yarn blends the default
// frequencies with themselves divided by factor, and its attention factor 0.1*ln(factor)+1 is 1).
bool degenerates_at_factor_one(const std::string& type) {
  return type == "dynamic" || type == "ntk" || type == "yarn";
}

void read_scaling(const ConfigFields& p, ModelConfig& c) {
  // transformers accepts the pre-4.42 key "type" for "rope_type".
  const std::string type = p.optional_string("rope_type", p.optional_string("type", "default"));
  RopeScaling& s = c.rope_scaling;
  s = RopeScaling{};
  const auto positive = [&](const char* key) {
    const double v = p.number(key);
    if (!(v > 0)) p.bad(key, "is " + std::to_string(v) + ", expected a positive number");
    return static_cast<float>(v);
  };
  if (type == "default") return;
  if (type == "linear") {
    s.type = RopeScalingType::Linear;
    s.factor = positive("factor");
    return;
  }
  if (type == "llama3") {
    s.type = RopeScalingType::Llama3;
    s.factor = positive("factor");
    s.low_freq_factor = positive("low_freq_factor");
    s.high_freq_factor = positive("high_freq_factor");
    s.original_max_position_embeddings = p.positive_int("original_max_position_embeddings");
    if (!(s.high_freq_factor > s.low_freq_factor)) {
      p.bad("high_freq_factor", "(" + std::to_string(s.high_freq_factor) +
                                    ") must be greater than low_freq_factor (" +
                                    std::to_string(s.low_freq_factor) + ")");
    }
    return;
  }
  const double factor = p.optional_number("factor", 1.0);
  const double attention_factor = p.optional_number("attention_factor", 1.0);
  if (degenerates_at_factor_one(type) && factor == 1.0 && attention_factor == 1.0) return;
  p.unsupported(p.qualified("rope_type") + " '" + type + "' (factor " + std::to_string(factor) +
                ") is not supported; supported: default, linear, llama3 (dynamic, ntk and yarn "
                "only with factor 1)");
}

}  // namespace

void read_rope(const ConfigFields& f, ModelConfig& c) {
  double theta = f.optional_number("rope_theta", 10000.0);
  double partial = f.optional_number("partial_rotary_factor", 1.0);
  const char* partial_field = "partial_rotary_factor";
  if (f.find("rope_parameters") != nullptr) {
    const ConfigFields p = f.child("rope_parameters");
    // A per-layer-type map (Gemma-style {"full_attention": {...}}) has neither key.
    if (p.find("rope_type") == nullptr && p.find("type") == nullptr &&
        p.find("rope_theta") == nullptr) {
      f.bad("rope_parameters", "has neither rope_type nor rope_theta");
    }
    theta = p.optional_number("rope_theta", theta);
    if (p.find("partial_rotary_factor") != nullptr) {
      partial = p.number("partial_rotary_factor");
      partial_field = "rope_parameters.partial_rotary_factor";
    }
    read_scaling(p, c);
  } else if (f.find("rope_scaling") != nullptr) {
    read_scaling(f.child("rope_scaling"), c);
  }
  if (!(theta > 0)) f.bad("rope_theta", "is " + std::to_string(theta) + ", expected > 0");
  c.rope_theta = static_cast<float>(theta);

  if (!(partial > 0 && partial <= 1)) {
    f.bad(partial_field, "is " + std::to_string(partial) + ", expected a value in (0, 1]");
  }
  c.partial_rotary_factor = static_cast<float>(partial);
  // transformers: dim = int(head_dim * partial_rotary_factor), then one frequency per pair.
  const int rotary_dim =
      static_cast<int>(c.head_dim * static_cast<double>(c.partial_rotary_factor));
  if (rotary_dim < 2 || rotary_dim % 2 != 0) {
    f.bad(partial_field, "gives " + std::to_string(rotary_dim) +
                             " rotated dimensions of head_dim " + std::to_string(c.head_dim) +
                             "; expected an even number >= 2");
  }
}

// transformers modeling_rope_utils: _compute_default_rope_parameters, then
// _compute_linear_scaling_rope_parameters or _compute_llama3_parameters.
std::vector<float> rope_inverse_frequencies(const ModelConfig& c) {
  if (c.positions != PositionKind::Rope) return {};
  const int dim = static_cast<int>(c.head_dim * static_cast<double>(c.partial_rotary_factor));
  const double base = c.rope_theta;
  const RopeScaling& s = c.rope_scaling;
  std::vector<float> out;
  out.reserve(static_cast<size_t>(dim / 2));
  for (int i = 0; i < dim; i += 2) {
    double inv = 1.0 / std::pow(base, static_cast<double>(i) / dim);
    if (s.type == RopeScalingType::Linear) {
      inv /= s.factor;
    } else if (s.type == RopeScalingType::Llama3) {
      // Llama 3.1: long wavelengths (low frequencies) are slowed by `factor`, short ones kept, and
      // the band between interpolated smoothly in old_context / wavelength.
      const double factor = s.factor, low = s.low_freq_factor, high = s.high_freq_factor;
      const double old_context = s.original_max_position_embeddings;
      const double wavelen = 2 * std::numbers::pi / inv;
      if (wavelen > old_context / low) {
        inv /= factor;
      } else if (!(wavelen < old_context / high)) {
        const double smooth = (old_context / wavelen - low) / (high - low);
        inv = (1 - smooth) * inv / factor + smooth * inv;
      }
    }
    out.push_back(static_cast<float>(inv));
  }
  return out;
}

}  // namespace kiln
