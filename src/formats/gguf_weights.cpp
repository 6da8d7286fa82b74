// GGUF tensors → float32 tensors under HF names. Names: docs/gguf.md "Standardized tensor names"
// (token_embd, output_norm, output, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_qkv,
// attn_output, attn_q_norm, attn_k_norm, ffn_norm, ffn_gate, ffn_up, ffn_down}). GGUF lists
// dimensions innermost first, so a GGUF [in, out] matrix is the HF [out, in] one with the same
// bytes in the same order.
//
// Llama q/k rows: llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute) reorders the rows of
// q_proj and k_proj (weights and biases) within each head, from HF's rotate_half layout (the two
// halves of a head are the RoPE pairs) to the interleaved layout of llama.cpp's
// LLAMA_ROPE_TYPE_NORM (adjacent rows are the pairs): reshape(n_head, 2, head_dim / 2,
// ...).swapaxes(1, 2). So GGUF row h*D + 2*j + i holds HF row h*D + i*D/2 + j; it is put back on
// load. Qwen2, Qwen3 and Phi3 use LLAMA_ROPE_TYPE_NEOX, which is HF's layout, and are stored
// unpermuted.
#include <algorithm>
#include <cstring>
#include <regex>

#include "core/error.hpp"
#include "formats/gguf_model.hpp"

namespace kiln {

namespace {

struct Mapping {
  std::string hf_name;
  int32_t unpermute_heads = 0;  // > 0: undo the Llama q/k row permutation over this many heads
};

// blk.N.<part>.(weight|bias) → HF name under model.layers.N.
std::optional<std::string> hf_layer_part(const std::string& part, bool fused_gate_up) {
  static const std::pair<const char*, const char*> kParts[] = {
      {"attn_norm", "input_layernorm"},
      {"attn_q", "self_attn.q_proj"},
      {"attn_k", "self_attn.k_proj"},
      {"attn_v", "self_attn.v_proj"},
      {"attn_qkv", "self_attn.qkv_proj"},
      {"attn_output", "self_attn.o_proj"},
      {"attn_q_norm", "self_attn.q_norm"},
      {"attn_k_norm", "self_attn.k_norm"},
      {"ffn_norm", "post_attention_layernorm"},
      {"ffn_gate", "mlp.gate_proj"},
      {"ffn_down", "mlp.down_proj"}};
  // Phi3's ffn_up holds gate then up stacked by rows (HF gate_up_proj, same order).
  if (part == "ffn_up") return fused_gate_up ? "mlp.gate_up_proj" : "mlp.up_proj";
  for (const auto& [gguf, hf] : kParts) {
    if (part == gguf) return hf;
  }
  return std::nullopt;
}

std::optional<Mapping> map_tensor(const std::string& name, const ModelConfig& c) {
  if (name == "token_embd.weight") return Mapping{"model.embed_tokens.weight"};
  if (name == "output_norm.weight") return Mapping{"model.norm.weight"};
  if (name == "output.weight") return Mapping{"lm_head.weight"};
  static const std::regex kLayer(R"(blk\.(\d+)\.([a-z_]+)\.(weight|bias))");
  std::smatch m;
  if (!std::regex_match(name, m, kLayer)) return std::nullopt;
  // Only blocks the config has (block_count); digits only, so the comparison is textual-safe.
  if (m[1].length() > 9 || std::stoll(m[1].str()) >= c.n_layers) return std::nullopt;
  const auto part = hf_layer_part(m[2].str(), c.traits.fused_gate_up);
  if (!part) return std::nullopt;
  Mapping out{"model.layers." + m[1].str() + "." + *part + "." + m[3].str()};
  if (c.architecture == "LlamaForCausalLM") {
    if (m[2].str() == "attn_q") out.unpermute_heads = c.n_heads;
    if (m[2].str() == "attn_k") out.unpermute_heads = c.n_kv_heads;
  }
  return out;
}

// `rows` rows of `row_bytes` bytes each; within each head of `rows / heads` rows, GGUF row 2*j + i
// becomes row i*half + j. Works on any storage, quantised rows included: a row is whole blocks.
std::vector<uint8_t> unpermute_rows(const uint8_t* in, int64_t rows, size_t row_bytes,
                                    int32_t heads, const std::string& name,
                                    const std::string& origin) {
  if (heads <= 0 || rows % heads != 0 || (rows / heads) % 2 != 0) {
    fail(KILN_ERR_FORMAT, origin + ": tensor " + name + " has " + std::to_string(rows) +
                              " rows, not a whole number of even-sized heads for " +
                              std::to_string(heads) + " heads");
  }
  const int64_t head_dim = rows / heads, half = head_dim / 2;
  std::vector<uint8_t> out(static_cast<size_t>(rows) * row_bytes);
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t j = 0; j < half; ++j) {
      for (int64_t i = 0; i < 2; ++i) {
        const uint8_t* src = in + static_cast<size_t>(h * head_dim + 2 * j + i) * row_bytes;
        uint8_t* dst = out.data() + static_cast<size_t>(h * head_dim + i * half + j) * row_bytes;
        std::copy(src, src + row_bytes, dst);
      }
    }
  }
  return out;
}

// The GGUF tensors the config calls for (the GGUF view of resolve_transformer_weights), so that a
// missing one is reported under the name the file would have used.
std::vector<std::string> required_tensors(const ModelConfig& c) {
  std::vector<std::string> names = {"token_embd.weight", "output_norm.weight"};
  if (!c.tie_word_embeddings) names.push_back("output.weight");
  for (int32_t i = 0; i < c.n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    std::vector<const char*> parts = {"attn_norm.weight", "attn_output.weight", "ffn_norm.weight",
                                      "ffn_up.weight", "ffn_down.weight"};
    if (c.traits.fused_qkv) {
      parts.push_back("attn_qkv.weight");
    } else {
      parts.insert(parts.end(), {"attn_q.weight", "attn_k.weight", "attn_v.weight"});
    }
    if (!c.traits.fused_gate_up) parts.push_back("ffn_gate.weight");
    if (c.traits.qkv_bias || c.attention_bias) {
      parts.insert(parts.end(), {"attn_q.bias", "attn_k.bias", "attn_v.bias"});
    }
    if (c.attention_bias) parts.push_back("attn_output.bias");
    if (c.traits.qk_norm) parts.insert(parts.end(), {"attn_q_norm.weight", "attn_k_norm.weight"});
    for (const char* part : parts) names.push_back(b + part);
  }
  return names;
}

std::vector<float> dequantize_tensor(const GgufTensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  const quant::GgmlTypeInfo* info = quant::find_ggml_type(static_cast<uint32_t>(t.type));
  // Whole rows (dims[0] is a multiple of the block size), split across threads.
  const int64_t row = t.dims[0];
  const int64_t n_rows = t.numel() / row;
  const size_t row_bytes = static_cast<size_t>(row / info->block_size) * info->block_bytes;
#pragma omp parallel for schedule(static) if (n_rows * row > (1 << 16))
  for (int64_t r = 0; r < n_rows; ++r) {
    quant::dequantize(t.type, t.data + static_cast<size_t>(r) * row_bytes, out.data() + r * row,
                      row);
  }
  return out;
}

void check_required_tensors(const GgufFile& f, const ModelConfig& c) {
  for (const std::string& name : required_tensors(c)) {
    if (f.find_tensor(name) == nullptr) {
      fail(KILN_ERR_FORMAT, f.origin() + ": tensor " + name + " is missing (a " + c.architecture +
                                " with " + std::to_string(c.n_layers) + " blocks needs it)");
    }
  }
}

Mapping checked_mapping(const GgufFile& f, const GgufTensor& t, const ModelConfig& c) {
  auto mapping = map_tensor(t.name, c);
  if (!mapping) {
    fail(KILN_ERR_UNSUPPORTED, f.origin() + ": tensor " + t.name + " (" +
                                   quant::ggml_type_name(static_cast<uint32_t>(t.type)) +
                                   ") has no place in kiln's " + c.architecture +
                                   " transformer (rope_freqs / rope_factors and other extra "
                                   "tensors are not supported)");
  }
  return *mapping;
}

void report_tensor(const ProgressFn& progress, size_t done, size_t total, const GgufFile& f,
                   const char* verb) {
  const float fraction = static_cast<float>(done) / static_cast<float>(total);
  if (progress && !progress(fraction, "weights")) {
    fail(KILN_ERR_CANCELLED,
         std::string("model loading cancelled by the progress callback while ") + verb + " " +
             f.origin());
  }
}

// The dtype a GGUF tensor keeps as a TensorView: the plain float types map to their DType, the
// block formats to DType::GGML.
DType stored_dtype(quant::GgmlType t) {
  switch (t) {
    case quant::GgmlType::F32:
      return DType::F32;
    case quant::GgmlType::F16:
      return DType::F16;
    case quant::GgmlType::BF16:
      return DType::BF16;
    default:
      return DType::GGML;
  }
}

}  // namespace

std::unique_ptr<WeightSet> gguf_weights_as_stored(std::shared_ptr<const GgufFile> file,
                                                  const ModelConfig& c,
                                                  const ProgressFn& progress) {
  const GgufFile& f = *file;
  check_required_tensors(f, c);
  std::vector<TensorView> views;
  std::vector<std::vector<uint8_t>> buffers;
  const auto& tensors = f.tensors();
  views.reserve(tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    const GgufTensor& t = tensors[k];
    const Mapping mapping = checked_mapping(f, t, c);
    TensorView v;
    v.name = mapping.hf_name;
    v.dtype = stored_dtype(t.type);
    v.ggml_type = t.type;
    v.shape.assign(t.dims.rbegin(), t.dims.rend());
    v.data = t.data;
    v.nbytes = t.nbytes;
    v.file = f.origin();
    if (mapping.unpermute_heads > 0) {
      const int64_t rows = v.shape[0];
      buffers.push_back(unpermute_rows(t.data, rows, t.nbytes / static_cast<size_t>(rows),
                                       mapping.unpermute_heads, t.name, f.origin()));
      v.data = buffers.back().data();
    }
    views.push_back(std::move(v));
    report_tensor(progress, k + 1, tensors.size(), f, "mapping");
  }
  const std::string origin = f.origin();
  return WeightSet::from_views(std::move(views), std::move(buffers), std::move(file), origin);
}

std::unique_ptr<WeightSet> gguf_weights(const GgufFile& f, const ModelConfig& c,
                                        const ProgressFn& progress) {
  check_required_tensors(f, c);
  std::vector<WeightSet::OwnedF32Tensor> out;
  const auto& tensors = f.tensors();
  out.reserve(tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    const GgufTensor& t = tensors[k];
    const Mapping mapping = checked_mapping(f, t, c);
    WeightSet::OwnedF32Tensor o;
    o.name = mapping.hf_name;
    o.shape.assign(t.dims.rbegin(), t.dims.rend());
    o.values = dequantize_tensor(t);
    if (mapping.unpermute_heads > 0) {
      const int64_t rows = o.shape[0];
      const int64_t cols = o.shape.size() > 1 ? o.shape[1] : 1;
      const auto bytes = unpermute_rows(reinterpret_cast<const uint8_t*>(o.values.data()), rows,
                                        static_cast<size_t>(cols) * sizeof(float),
                                        mapping.unpermute_heads, t.name, f.origin());
      std::memcpy(o.values.data(), bytes.data(), bytes.size());
    }
    out.push_back(std::move(o));
    report_tensor(progress, k + 1, tensors.size(), f, "dequantising");
  }
  return WeightSet::from_owned(std::move(out), f.origin());
}

}  // namespace kiln
