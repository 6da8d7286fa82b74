#include "train/hf_export.hpp"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "core/error.hpp"
#include "formats/safetensors_writer.hpp"
#include "model/config_writer.hpp"
#include "util/atomic_file.hpp"

namespace kiln {

namespace fs = std::filesystem;

namespace {

enum class Family { Identity, Phi3, Gpt2, NanoChat };

Family family_of(const ModelConfig& c) {
  const std::string& a = c.architecture;
  if (a == "LlamaForCausalLM" || a == "MistralForCausalLM" || a == "Qwen2ForCausalLM" ||
      a == "Qwen3ForCausalLM") {
    return Family::Identity;
  }
  if (a == "Phi3ForCausalLM") return Family::Phi3;
  if (a == "GPT2LMHeadModel") return Family::Gpt2;
  if (a == "NanoChatForCausalLM") return Family::NanoChat;
  fail(KILN_ERR_UNSUPPORTED, "cannot export architecture '" + a +
                                 "' to HF format; supported: LlamaForCausalLM, "
                                 "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, "
                                 "Phi3ForCausalLM, GPT2LMHeadModel, NanoChatForCausalLM");
}

// "model.layers.<L>.<rest>" -> (L, rest).
std::optional<std::pair<std::string, std::string>> split_layer(const std::string& name) {
  static const std::string prefix = "model.layers.";
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return std::nullopt;
  return std::make_pair(name.substr(prefix.size(), dot - prefix.size()), name.substr(dot + 1));
}

class Exporter {
 public:
  Exporter(const ModelConfig& c, const ParamLayout& l, const float* v)
      : config_(c), layout_(l), values_(v), family_(family_of(c)) {}

  std::vector<HfTensor> run() {
    for (const ParamSpec& s : layout_.specs()) {
      if (used_.count(s.name) != 0) continue;
      if (s.name.rfind("model.mtp_heads.", 0) == 0) {
        used_.insert(s.name);  // no place in HF formats (see the header)
        continue;
      }
      map(s);
    }
    return std::move(out_);
  }

 private:
  void map(const ParamSpec& s) {
    const auto layer = split_layer(s.name);
    switch (family_) {
      case Family::Identity:
        return keep(s, s.name);
      case Family::NanoChat:
        if (layer && layer->second == "mlp.up_proj.weight")
          return keep(s, prefix(*layer) + "mlp.fc1.weight");
        if (layer && layer->second == "mlp.down_proj.weight")
          return keep(s, prefix(*layer) + "mlp.fc2.weight");
        return keep(s, s.name);
      case Family::Phi3:
        if (layer && is_one_of(layer->second, {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                               "self_attn.v_proj.weight"})) {
          const std::string p = "model.layers." + layer->first + ".self_attn.";
          return fuse_rows(p + "qkv_proj.weight",
                           {p + "q_proj.weight", p + "k_proj.weight", p + "v_proj.weight"});
        }
        if (layer && is_one_of(layer->second, {"mlp.gate_proj.weight", "mlp.up_proj.weight"})) {
          const std::string p = "model.layers." + layer->first + ".mlp.";
          return fuse_rows(p + "gate_up_proj.weight",
                           {p + "gate_proj.weight", p + "up_proj.weight"});
        }
        return keep(s, s.name);
      case Family::Gpt2:
        return gpt2(s, layer);
    }
  }

  void gpt2(const ParamSpec& s, const std::optional<std::pair<std::string, std::string>>& layer) {
    if (s.name == "model.embed_tokens.weight") return keep(s, "transformer.wte.weight");
    if (s.name == "model.embed_positions.weight") return keep(s, "transformer.wpe.weight");
    if (s.name == "model.norm.weight") return keep(s, "transformer.ln_f.weight");
    if (s.name == "model.norm.bias") return keep(s, "transformer.ln_f.bias");
    if (s.name == "lm_head.weight") return keep(s, "lm_head.weight");
    if (!layer) no_place(s);
    const std::string in = "model.layers." + layer->first + ".";
    const std::string hf = "transformer.h." + layer->first + ".";
    const std::string& rest = layer->second;
    static const std::map<std::string, std::string> kKept = {
        {"input_layernorm.weight", "ln_1.weight"},
        {"input_layernorm.bias", "ln_1.bias"},
        {"post_attention_layernorm.weight", "ln_2.weight"},
        {"post_attention_layernorm.bias", "ln_2.bias"},
        {"self_attn.o_proj.bias", "attn.c_proj.bias"},
        {"mlp.up_proj.bias", "mlp.c_fc.bias"},
        {"mlp.down_proj.bias", "mlp.c_proj.bias"}};
    static const std::map<std::string, std::string> kTransposed = {
        {"self_attn.o_proj.weight", "attn.c_proj.weight"},
        {"mlp.up_proj.weight", "mlp.c_fc.weight"},
        {"mlp.down_proj.weight", "mlp.c_proj.weight"}};
    if (const auto k = kKept.find(rest); k != kKept.end()) return keep(s, hf + k->second);
    if (const auto t = kTransposed.find(rest); t != kTransposed.end()) {
      used_.insert(s.name);
      out_.push_back(transposed(hf + t->second, {&s}));
      return;
    }
    const std::string a = in + "self_attn.";
    if (is_one_of(rest, {"self_attn.q_proj.weight", "self_attn.k_proj.weight",
                         "self_attn.v_proj.weight"})) {
      // Conv1D c_attn: [in, 3 * out] = the row-stack of q, k, v, transposed.
      const std::vector<const ParamSpec*> parts = {
          &need(a + "q_proj.weight"), &need(a + "k_proj.weight"), &need(a + "v_proj.weight")};
      for (const ParamSpec* p : parts) used_.insert(p->name);
      out_.push_back(transposed(hf + "attn.c_attn.weight", parts));
      return;
    }
    if (is_one_of(rest,
                  {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"})) {
      return fuse_rows(hf + "attn.c_attn.bias",
                       {a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"});
    }
    no_place(s);
  }

  static std::string prefix(const std::pair<std::string, std::string>& layer) {
    return "model.layers." + layer.first + ".";
  }

  static bool is_one_of(const std::string& s, std::initializer_list<const char*> options) {
    for (const char* o : options) {
      if (s == o) return true;
    }
    return false;
  }

  [[noreturn]] void no_place(const ParamSpec& s) const {
    fail(KILN_ERR_INVALID_ARGUMENT, "HF export: tensor '" + s.name + "' has no place in a " +
                                        config_.architecture + " checkpoint");
  }

  const ParamSpec& need(const std::string& name) const {
    const ParamSpec* s = layout_.find(name);
    if (s == nullptr) {
      fail(KILN_ERR_INVALID_ARGUMENT, "HF export: " + config_.architecture + " needs tensor '" +
                                          name + "', which the parameter layout lacks");
    }
    return *s;
  }

  void keep(const ParamSpec& s, const std::string& hf_name) {
    used_.insert(s.name);
    HfTensor t;
    t.name = hf_name;
    t.shape = s.shape;
    t.borrowed = values_ + s.offset;
    out_.push_back(std::move(t));
  }

  // Stacks the parts by rows (dimension 0); all parts must agree on the other dimensions.
  void fuse_rows(const std::string& hf_name, const std::vector<std::string>& names) {
    HfTensor t;
    t.name = hf_name;
    for (const std::string& n : names) {
      const ParamSpec& p = need(n);
      used_.insert(p.name);
      if (t.shape.empty()) {
        t.shape = p.shape;
      } else {
        if (!same_tail(t.shape, p.shape)) {
          fail(KILN_ERR_INVALID_ARGUMENT, "HF export: cannot stack '" + p.name + "' into '" +
                                              hf_name + "': its trailing dimensions differ from '" +
                                              names[0] + "'");
        }
        t.shape[0] += p.shape[0];
      }
      t.owned.insert(t.owned.end(), values_ + p.offset, values_ + p.offset + p.numel);
    }
    out_.push_back(std::move(t));
  }

  static bool same_tail(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    return a.size() == b.size() && std::equal(a.begin() + 1, a.end(), b.begin() + 1);
  }

  // The row-stack of the 2-D parts ([out_i, in] each), transposed to [in, sum out_i].
  HfTensor transposed(const std::string& hf_name,
                      const std::vector<const ParamSpec*>& parts) const {
    int64_t in = -1, out = 0;
    for (const ParamSpec* p : parts) {
      if (p->shape.size() != 2 || (in >= 0 && p->shape[1] != in)) {
        fail(KILN_ERR_INVALID_ARGUMENT, "HF export: '" + p->name + "' cannot become part of '" +
                                            hf_name + "' (expected 2-D with matching inputs)");
      }
      in = p->shape[1];
      out += p->shape[0];
    }
    HfTensor t;
    t.name = hf_name;
    t.shape = {in, out};
    t.owned.resize(static_cast<size_t>(in * out));
    int64_t col = 0;
    for (const ParamSpec* p : parts) {
      const float* src = values_ + p->offset;
      for (int64_t r = 0; r < p->shape[0]; ++r) {
        for (int64_t i = 0; i < in; ++i)
          t.owned[static_cast<size_t>(i * out + col + r)] = src[r * in + i];
      }
      col += p->shape[0];
    }
    return t;
  }

  const ModelConfig& config_;
  const ParamLayout& layout_;
  const float* values_;
  Family family_;
  std::set<std::string> used_;
  std::vector<HfTensor> out_;
};

void write_text(const fs::path& path, const std::string& text) {
  AtomicFileWriter w(path);
  w.write(text.data(), text.size());
  w.commit();
}

}  // namespace

std::vector<HfTensor> hf_tensors(const ModelConfig& config, const ParamLayout& layout,
                                 const float* values) {
  return Exporter(config, layout, values).run();
}

void export_hf_model(const fs::path& dir, const ModelConfig& config, const ParamLayout& layout,
                     const float* values, const HfExportOptions& options) {
  const std::string config_text = model_config_to_json(config, options.dtype);
  const std::vector<HfTensor> tensors = hf_tensors(config, layout, values);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    fail(KILN_ERR_IO, "cannot create export directory '" + dir.string() + "': " + ec.message());
  if (fs::exists(dir / "model.safetensors.index.json", ec)) {
    fail(KILN_ERR_INVALID_ARGUMENT, "export directory '" + dir.string() +
                                        "' holds a model.safetensors.index.json, which readers "
                                        "would follow instead of the exported model.safetensors");
  }
  std::vector<SafetensorsTensorOut> out;
  out.reserve(tensors.size());
  for (const HfTensor& t : tensors) out.push_back({t.name, t.shape, t.data()});
  write_safetensors(dir / "model.safetensors", out, options.dtype);
  write_text(dir / "config.json", config_text);
  if (!options.tokenizer_json.empty()) write_text(dir / "tokenizer.json", options.tokenizer_json);
  if (!options.tokenizer_config_json.empty()) {
    write_text(dir / "tokenizer_config.json", options.tokenizer_config_json);
  }
}

}  // namespace kiln
