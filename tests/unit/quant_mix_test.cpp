// kiln-quantize's per-tensor types against tables written by hand from llama.cpp's rules
// (llama-quant.cpp, llama_tensor_get_type and its fallback switch) for the two shapes the
// benchmarks use: Qwen2.5-0.5B (hidden 896: no row of attn/ffn_gate/ffn_up is a whole number of
// 256-element super-blocks, so Q4_K falls back to q5_0 and Q6_K to q8_0) and Qwen2.5-7B (hidden
// 3584 = 14·256, intermediate 18944 = 74·256: no fallback). The layer sets below are listed
// literally, not computed with use_more_bits, so a slip in the formula shows up here.
#include "engine/quant_mix.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace kiln {
namespace {

using quant::GgmlType;

struct Shape {
  int64_t hidden, layers, heads, kv_heads, head_dim, ffn, vocab;
  bool tied;
};

struct Tensor {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: row length first
};

// The tensors of a Qwen2 GGUF (llama.cpp's names; q/k/v carry biases).
std::vector<Tensor> qwen2_tensors(const Shape& s) {
  const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
  std::vector<Tensor> t{{"token_embd.weight", {s.hidden, s.vocab}},
                        {"output_norm.weight", {s.hidden}}};
  if (!s.tied) t.push_back({"output.weight", {s.hidden, s.vocab}});
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    t.push_back({b + "attn_norm.weight", {s.hidden}});
    t.push_back({b + "attn_q.weight", {s.hidden, q}});
    t.push_back({b + "attn_q.bias", {q}});
    t.push_back({b + "attn_k.weight", {s.hidden, kv}});
    t.push_back({b + "attn_k.bias", {kv}});
    t.push_back({b + "attn_v.weight", {s.hidden, kv}});
    t.push_back({b + "attn_v.bias", {kv}});
    t.push_back({b + "attn_output.weight", {q, s.hidden}});
    t.push_back({b + "ffn_norm.weight", {s.hidden}});
    t.push_back({b + "ffn_gate.weight", {s.hidden, s.ffn}});
    t.push_back({b + "ffn_up.weight", {s.hidden, s.ffn}});
    t.push_back({b + "ffn_down.weight", {s.ffn, s.hidden}});
  }
  return t;
}

struct Table {
  GgmlType embd, output;     // token_embd, output (output unused when tied)
  GgmlType more_v, other_v;  // attn_v in the more-bits layers / elsewhere
  GgmlType more_down, other_down;
  GgmlType rest;  // attn_q, attn_k, attn_output, ffn_gate, ffn_up
  std::set<int64_t> more_layers;
};

GgmlType expected(const Table& tb, const Tensor& t) {
  if (t.dims.size() == 1) return GgmlType::F32;
  if (t.name == "token_embd.weight") return tb.embd;
  if (t.name == "output.weight") return tb.output;
  const int64_t layer = std::stoll(t.name.substr(4, t.name.find('.', 4) - 4));
  const bool more = tb.more_layers.count(layer) > 0;
  if (t.name.find(".attn_v.") != std::string::npos) return more ? tb.more_v : tb.other_v;
  if (t.name.find(".ffn_down.") != std::string::npos) return more ? tb.more_down : tb.other_down;
  return tb.rest;
}

std::map<GgmlType, int> check(const Shape& s, const Table& tb) {
  std::map<GgmlType, int> counts;
  for (const Tensor& t : qwen2_tensors(s)) {
    const GgmlType got =
        quantized_tensor_type(QuantizeTarget::Q4_K_M, t.name, t.dims, !s.tied, s.layers);
    EXPECT_EQ(got, expected(tb, t))
        << t.name << ": kiln writes " << quant::ggml_type_name(static_cast<uint32_t>(got));
    ++counts[got];
  }
  return counts;
}

TEST(QuantMix, Qwen25_05BShapeMatchesLlamaCppsQ4_K_M) {
  const Shape s{896, 24, 14, 2, 64, 4864, 151936, true};
  // n = 24: layers 0..2 (< n/8 = 3), 21..23 (>= 7n/8 = 21), and 5, 8, ..., 20 ((i − 3) % 3 == 2).
  const Table tb{
      GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q5_0,
      GgmlType::Q6_K, GgmlType::Q4_K, GgmlType::Q5_0, {0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23}};
  const auto counts = check(s, tb);
  // The per-type totals llama.cpp's loader prints for such a file.
  EXPECT_EQ(counts.at(GgmlType::F32), 121);
  EXPECT_EQ(counts.at(GgmlType::Q5_0), 132);
  EXPECT_EQ(counts.at(GgmlType::Q8_0), 13);
  EXPECT_EQ(counts.at(GgmlType::Q4_K), 12);
  EXPECT_EQ(counts.at(GgmlType::Q6_K), 12);
}

TEST(QuantMix, Qwen25_7BShapeMatchesLlamaCppsQ4_K_M) {
  const Shape s{3584, 28, 28, 4, 128, 18944, 152064, false};
  // n = 28: layers 0..2 (< 3), 24..27 (>= 7·28/8 = 24), and 5, 8, ..., 23.
  const Table tb{GgmlType::Q4_K, GgmlType::Q6_K,
                 GgmlType::Q6_K, GgmlType::Q4_K,
                 GgmlType::Q6_K, GgmlType::Q4_K,
                 GgmlType::Q4_K, {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27}};
  const auto counts = check(s, tb);
  EXPECT_EQ(counts.at(GgmlType::F32), 141);
  EXPECT_EQ(counts.at(GgmlType::Q4_K), 169);
  EXPECT_EQ(counts.at(GgmlType::Q6_K), 29);
  EXPECT_EQ(counts.count(GgmlType::Q5_0) + counts.count(GgmlType::Q8_0), 0u);
}

TEST(QuantMix, Q8_0AndF16TargetsTakeEveryMatrix) {
  const Shape s{896, 24, 14, 2, 64, 4864, 151936, true};
  for (const Tensor& t : qwen2_tensors(s)) {
    const GgmlType matrix_q8 = t.dims.size() == 1 ? GgmlType::F32 : GgmlType::Q8_0;
    const GgmlType matrix_f16 = t.dims.size() == 1 ? GgmlType::F32 : GgmlType::F16;
    EXPECT_EQ(quantized_tensor_type(QuantizeTarget::Q8_0, t.name, t.dims, false, 24), matrix_q8)
        << t.name;
    EXPECT_EQ(quantized_tensor_type(QuantizeTarget::F16, t.name, t.dims, false, 24), matrix_f16)
        << t.name;
  }
}

// Rows of 48: neither Q4_K's 256 nor Q5_0's / Q8_0's 32 divide them, so every type falls to F16.
TEST(QuantMix, RowsThatAreNotWhole32BlocksFallBackToF16) {
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.attn_v.weight", "output.weight"}) {
    EXPECT_EQ(quantized_tensor_type(QuantizeTarget::Q4_K_M, name, {48, 64}, true, 2), GgmlType::F16)
        << name;
    EXPECT_EQ(quantized_tensor_type(QuantizeTarget::Q8_0, name, {48, 64}, true, 2), GgmlType::F16)
        << name;
  }
}

}  // namespace
}  // namespace kiln
