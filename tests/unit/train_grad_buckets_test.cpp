// Gradient buckets of the data-parallel all-reduce overlapped with the backward pass (issue 8):
// the plan (train/data_parallel/grad_buckets.hpp), the cursor the CUDA engine walks it with, and
// the KILN_DP_BUCKET_MB switch. CPU only: the GPU side is tests/abi/data_parallel_test.cpp.
//
// The expectations are written here from the families' definitions and the backward order the
// engines follow (heads first: unembedding, final norm, the head's block MLP then attention; then
// the trunk layers downwards; the embedding last), as literal tensor names or as arithmetic on
// the config's sizes, never by asking the planner.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "model/config.hpp"
#include "test_support.hpp"
#include "train/data_parallel/grad_buckets.hpp"
#include "train/model_layout.hpp"
#include "train/param_layout.hpp"
#include "train/train_graph.hpp"

namespace kiln {
namespace {

using train::GradBucket;
using train::GradBucketCursor;
using train::GradBucketPlan;
using train::GradPoint;
using train::GradPointKind;

// ---- configs --------------------------------------------------------------------------------

// The fields every family here shares: 4 heads of hidden / 4, a context of 64.
ModelConfig base(const char* architecture, int32_t layers, int32_t hidden, int32_t inter,
                 int32_t vocab, int32_t kv_heads) {
  ModelConfig c;
  c.architecture = architecture;
  c.vocab_size = vocab;
  c.hidden_size = hidden;
  c.n_layers = layers;
  c.n_heads = 4;
  c.n_kv_heads = kv_heads;
  c.head_dim = hidden / 4;
  c.intermediate_size = inter;
  c.max_position_embeddings = 64;
  return c;
}

ModelConfig llama(int32_t layers, int32_t hidden, int32_t inter, int32_t vocab, int32_t mtp = 0) {
  ModelConfig c = base("LlamaForCausalLM", layers, hidden, inter, vocab, 2);
  c.traits = *find_arch_traits(c.architecture);
  c.n_mtp_heads = mtp;
  return c;
}

ModelConfig gpt2(int32_t layers, int32_t hidden, int32_t vocab, int32_t positions) {
  ModelConfig c = base("GPT2LMHeadModel", layers, hidden, 4 * hidden, vocab, 4);
  c.max_position_embeddings = positions;
  c.norm = NormKind::LayerNorm;
  c.mlp = MlpKind::GeluTanh;
  c.positions = PositionKind::Learned;
  c.attention_bias = true;
  c.mlp_bias = true;
  c.tie_word_embeddings = true;
  return c;
}

ModelConfig nanochat(int32_t layers, int32_t hidden, int32_t vocab) {
  ModelConfig c = base("NanoChatForCausalLM", layers, hidden, 4 * hidden, vocab, 4);
  c.norm = NormKind::RmsNormNoWeight;
  c.mlp = MlpKind::ReluSquared;
  c.qk_norm = QkNormKind::AfterRopeNoWeight;
  c.embed_norm = true;
  c.logit_softcap = 15.0f;
  return c;
}

// ---- expected groups, written out --------------------------------------------------------------

using Group = std::set<std::string>;

Group llama_mlp(const std::string& p) {
  return {p + "post_attention_layernorm.weight", p + "mlp.gate_proj.weight",
          p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"};
}
Group llama_attention(const std::string& p) {
  return {p + "input_layernorm.weight", p + "self_attn.q_proj.weight",
          p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight",
          p + "self_attn.o_proj.weight"};
}
Group gpt2_mlp(const std::string& p) {
  return {p + "post_attention_layernorm.weight",
          p + "post_attention_layernorm.bias",
          p + "mlp.up_proj.weight",
          p + "mlp.up_proj.bias",
          p + "mlp.down_proj.weight",
          p + "mlp.down_proj.bias"};
}
Group gpt2_attention(const std::string& p) {
  Group g{p + "input_layernorm.weight", p + "input_layernorm.bias"};
  for (const char* proj : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    g.insert(p + "self_attn." + proj + ".weight");
    g.insert(p + "self_attn." + proj + ".bias");
  }
  return g;
}
Group nanochat_mlp(const std::string& p) {
  return {p + "mlp.up_proj.weight", p + "mlp.down_proj.weight"};
}
Group nanochat_attention(const std::string& p) {
  return {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
          p + "self_attn.v_proj.weight", p + "self_attn.o_proj.weight"};
}
std::string L(int l) { return "model.layers." + std::to_string(l) + "."; }
std::string M(int k) { return "model.mtp_heads." + std::to_string(k) + "."; }

// The tensors each point of the plan releases (a 1-byte cap: every tensor is a bucket alone),
// in point order; points that release nothing are left out.
std::vector<Group> released_groups(const ModelConfig& c) {
  const ParamLayout layout = train::make_param_layout(c);
  const GradBucketPlan plan(c, layout, 1);
  std::map<int32_t, Group> by_point;
  for (const GradBucket& b : plan.buckets()) {
    EXPECT_EQ(b.end_param - b.first_param, 1) << "a 1-byte cap leaves every tensor alone";
    for (int32_t i = b.first_param; i < b.end_param; ++i) {
      by_point[b.ready_point].insert(layout.specs()[i].name);
    }
  }
  std::vector<Group> out;
  for (auto& [point, names] : by_point) out.push_back(names);
  return out;
}

TEST(GradBuckets, LlamaReleasesHeadThenLayersDownwardsThenTheEmbedding) {
  const std::vector<Group> expected = {
      {"model.norm.weight", "lm_head.weight"},
      llama_mlp(L(2)),
      llama_attention(L(2)),
      llama_mlp(L(1)),
      llama_attention(L(1)),
      llama_mlp(L(0)),
      llama_attention(L(0)),
      {"model.embed_tokens.weight"},
  };
  EXPECT_EQ(released_groups(llama(3, 16, 24, 40)), expected);
}

TEST(GradBuckets, Gpt2TiedHeadAndPositionsWaitForTheEmbeddingBackward) {
  // Tied: the head writes model.embed_tokens first, the embedding backward last.
  const std::vector<Group> expected = {
      {"model.norm.weight", "model.norm.bias"},
      gpt2_mlp(L(1)),
      gpt2_attention(L(1)),
      gpt2_mlp(L(0)),
      gpt2_attention(L(0)),
      {"model.embed_tokens.weight", "model.embed_positions.weight"},
  };
  EXPECT_EQ(released_groups(gpt2(2, 16, 40, 32)), expected);
}

TEST(GradBuckets, NanoChatHasNoNormWeightsAndAnUntiedHead) {
  const std::vector<Group> expected = {
      {"lm_head.weight"}, nanochat_mlp(L(1)),       nanochat_attention(L(1)),
      nanochat_mlp(L(0)), nanochat_attention(L(0)), {"model.embed_tokens.weight"},
  };
  EXPECT_EQ(released_groups(nanochat(2, 16, 40)), expected);
}

TEST(GradBuckets, WeightedEmbedNormHoldsTheFinalNormUntilTheEnd) {
  // A weighted norm shared with the embedding (embed_norm): model.norm is written again by the
  // embedding's norm backward, after every layer.
  ModelConfig c = llama(2, 16, 24, 40);
  c.embed_norm = true;
  const std::vector<Group> expected = {
      {"lm_head.weight"}, llama_mlp(L(1)),       llama_attention(L(1)),
      llama_mlp(L(0)),    llama_attention(L(0)), {"model.embed_tokens.weight", "model.norm.weight"},
  };
  EXPECT_EQ(released_groups(c), expected);
}

TEST(GradBuckets, MtpHeadsComeAfterTheMainHeadAndBeforeTheTrunk) {
  // Main head (layer 1 is its block), MTP head 1, then the last head: the unembedding and final
  // norm are final after its norm backward, its block after that; then the trunk (layer 0).
  const std::vector<Group> expected = {
      llama_mlp(L(1)),
      llama_attention(L(1)),
      llama_mlp(M(1)),
      llama_attention(M(1)),
      {"model.norm.weight", "lm_head.weight"},
      llama_mlp(M(2)),
      llama_attention(M(2)),
      llama_mlp(L(0)),
      llama_attention(L(0)),
      {"model.embed_tokens.weight"},
  };
  EXPECT_EQ(released_groups(llama(2, 16, 24, 40, 2)), expected);
}

TEST(GradBuckets, PointsAreTheBackwardOrderAndTheCursorChecksThem) {
  const ModelConfig c = llama(2, 16, 24, 40, 1);
  using K = GradPointKind;
  const std::vector<GradPoint> expected = {
      {K::BlockMlp, 1},       {K::BlockAttention, 1}, {K::HeadOutputs, -1},   {K::BlockMlp, 2},
      {K::BlockAttention, 2}, {K::BlockMlp, 0},       {K::BlockAttention, 0}, {K::Embedding, -1}};
  EXPECT_EQ(train::backward_grad_points(c), expected);
}

// ---- invariants at realistic sizes --------------------------------------------------------------

// Every tensor in exactly one bucket, buckets disjoint and covering [0, total) (padding
// included), within the cap unless a lone tensor over it, released no earlier than the last
// point writing any of their tensors, in non-decreasing release order.
void expect_sound(const ModelConfig& c, int64_t cap) {
  const ParamLayout layout = train::make_param_layout(c);
  const GradBucketPlan plan(c, layout, cap);
  const auto& specs = layout.specs();
  const auto& buckets = plan.buckets();
  ASSERT_FALSE(buckets.empty());
  std::vector<GradBucket> sorted = buckets;
  std::sort(sorted.begin(), sorted.end(),
            [](const GradBucket& a, const GradBucket& b) { return a.begin < b.begin; });
  EXPECT_EQ(sorted.front().begin, 0);
  EXPECT_EQ(sorted.back().end, layout.total());
  for (size_t i = 1; i < sorted.size(); ++i) EXPECT_EQ(sorted[i].begin, sorted[i - 1].end);

  const std::vector<GradPoint> points = train::backward_grad_points(c);
  for (size_t bi = 0; bi < buckets.size(); ++bi) {
    const GradBucket& b = buckets[bi];
    if (bi > 0) {
      EXPECT_GE(b.ready_point, buckets[bi - 1].ready_point) << "bucket " << bi;
    }
    ASSERT_LT(b.first_param, b.end_param);
    const int64_t over = specs[b.first_param].numel * 4;
    EXPECT_TRUE(b.bytes() <= cap || (b.end_param - b.first_param == 1 && over > cap))
        << "bucket " << bi << " holds " << b.bytes() << " bytes, cap " << cap;
    EXPECT_EQ(b.begin, specs[b.first_param].offset);
    int32_t last_writer = -1;
    for (int32_t i = b.first_param; i < b.end_param; ++i) {
      const ParamSpec& s = specs[i];
      EXPECT_GE(s.offset, b.begin);
      EXPECT_LE(s.offset + s.numel, b.end);
      EXPECT_EQ(plan.bucket_of(s.offset), static_cast<int32_t>(bi)) << s.name;
      // The point writing s last, from the name alone (the header's table).
      GradPoint p{GradPointKind::Embedding, -1};
      if (s.name == "lm_head.weight" || (s.name.rfind("model.norm.", 0) == 0 && !c.embed_norm)) {
        p = {GradPointKind::HeadOutputs, -1};
      }
      for (int32_t blk = 0; blk < c.n_layers + c.n_mtp_heads; ++blk) {
        const std::string pre = blk < c.n_layers ? L(blk) : M(blk - c.n_layers + 1);
        if (s.name.rfind(pre, 0) != 0) continue;
        const bool mlp = s.name.find(".mlp.") != std::string::npos ||
                         s.name.find(".post_attention_layernorm.") != std::string::npos;
        p = {mlp ? GradPointKind::BlockMlp : GradPointKind::BlockAttention, blk};
      }
      const auto at = std::find(points.begin(), points.end(), p);
      ASSERT_NE(at, points.end()) << s.name;
      last_writer = std::max(last_writer, static_cast<int32_t>(at - points.begin()));
    }
    EXPECT_EQ(b.ready_point, last_writer) << "bucket " << bi;
  }
  int32_t tensors = 0;
  for (const GradBucket& b : buckets) tensors += b.end_param - b.first_param;
  EXPECT_EQ(tensors, static_cast<int32_t>(specs.size()));
}

TEST(GradBuckets, SoundAtRealisticSizesAndCaps) {
  const ModelConfig gpt2_small = gpt2(12, 768, 50257, 1024);
  ModelConfig llama_1b = llama(16, 2048, 5632, 32000);
  llama_1b.n_heads = 32, llama_1b.n_kv_heads = 4, llama_1b.head_dim = 64;
  const ModelConfig nanochat_d20 = nanochat(20, 1280, 65536);
  ModelConfig mtp = llama(4, 256, 512, 1000, 2);
  for (const ModelConfig* c :
       std::vector<const ModelConfig*>{&gpt2_small, &llama_1b, &nanochat_d20, &mtp}) {
    for (int64_t cap :
         {int64_t{1}, int64_t{1} << 20, GradBucketPlan::kDefaultBytes, int64_t{1} << 40}) {
      SCOPED_TRACE(c->architecture + " cap " + std::to_string(cap));
      expect_sound(*c, cap);
    }
  }
}

TEST(GradBuckets, Gpt2SmallAtTheDefaultCap) {
  // GPT-2 small, 25 MiB = 26,214,400 bytes. Per layer (float32 bytes):
  //   MLP half  = 4 · (2·768 + 768·3072 + 3072 + 3072·768 + 768) = 18,895,872: fits
  //   attention = 4 · (2·768 + 4·(768·768 + 768))               =  9,455,616: fits
  //   MLP + attention of one layer, or attention of layer l + MLP of layer l-1: 28,351,488 > cap
  // so every half is a bucket, except that the final norm (4 · 2·768 bytes) joins layer 11's MLP
  // half; the embedding group (tokens 154,389,504 bytes, positions 3,145,728) is over the cap
  // and is cut into one bucket per tensor: 1 + 1 + 11·2 + 2 = 26 buckets.
  const ModelConfig c = gpt2(12, 768, 50257, 1024);
  const ParamLayout layout = train::make_param_layout(c);
  const GradBucketPlan plan(c, layout, GradBucketPlan::kDefaultBytes);
  const auto& b = plan.buckets();
  ASSERT_EQ(b.size(), 26u);
  EXPECT_EQ(b[0].bytes(), 18895872 + 4 * 2 * 768);
  EXPECT_EQ(b[0].end, layout.total());
  EXPECT_EQ(b[1].bytes(), 9455616);
  EXPECT_EQ(b[1].end, b[0].begin);
  const auto embed = std::find_if(b.begin(), b.end(), [&](const GradBucket& x) {
    return x.begin == layout.at("model.embed_tokens.weight").offset;
  });
  ASSERT_NE(embed, b.end());
  EXPECT_EQ(embed->end_param - embed->first_param, 1);
  EXPECT_EQ(embed->bytes(), int64_t{50257} * 768 * 4);
  EXPECT_EQ(embed->ready_point, static_cast<int32_t>(plan.points().size()) - 1);
}

TEST(GradBuckets, AHugeCapMergesEverythingIntoOneRangeReleasedLast) {
  // Without MTP the points walk the buffer downwards one adjacent range after another.
  const ModelConfig c = llama(3, 16, 24, 40);
  const ParamLayout layout = train::make_param_layout(c);
  const GradBucketPlan plan(c, layout, int64_t{1} << 40);
  ASSERT_EQ(plan.buckets().size(), 1u);
  EXPECT_EQ(plan.buckets()[0].begin, 0);
  EXPECT_EQ(plan.buckets()[0].end, layout.total());
  EXPECT_EQ(plan.buckets()[0].ready_point, static_cast<int32_t>(plan.points().size()) - 1);
}

TEST(GradBuckets, ATensorOverTheCapIsABucketAlone) {
  // vocab 1000 × hidden 16: the embedding and the head are 64,000 bytes each; a 4 KiB cap leaves
  // them alone while the 1,024-byte q projections share buckets.
  const ModelConfig c = llama(2, 16, 24, 1000);
  const ParamLayout layout = train::make_param_layout(c);
  const GradBucketPlan plan(c, layout, 4096);
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    const GradBucket& b = plan.buckets()[plan.bucket_of(layout.at(name).offset)];
    EXPECT_EQ(b.end_param - b.first_param, 1) << name;
    EXPECT_EQ(b.bytes(), 64000) << name;
  }
  const GradBucket& q =
      plan.buckets()[plan.bucket_of(layout.at(L(1) + "self_attn.q_proj.weight").offset)];
  EXPECT_GT(q.end_param - q.first_param, 1);
  EXPECT_LE(q.bytes(), 4096);
  EXPECT_FAILS(GradBucketPlan(c, layout, 0), KILN_ERR_INVALID_ARGUMENT, "target size is 0");
}

// ---- against a real backward pass ------------------------------------------------------------

// The CPU TrainGraph walks the backward pass in the CUDA engine's order and reports each point
// right after its writes (train_graph.hpp). Snapshots of the gradient buffer at every point show,
// for every tensor alone in its bucket (1-byte cap), that its gradient is final at its bucket's
// release point (never changes afterwards) and not final at the point before (the release is
// not later than needed), and that the graph reaches the points in the plan's order.
void expect_release_points_match_the_writes(const ModelConfig& c) {
  const ParamLayout layout = train::make_param_layout(c);
  const GradBucketPlan plan(c, layout, 1);
  constexpr int64_t kRows = 2, kSeq = 8;
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> params(static_cast<size_t>(layout.total()), 0.0f);
  for (const ParamSpec& sp : layout.specs()) {
    for (int64_t i = 0; i < sp.numel; ++i) {
      params[sp.offset + i] = sp.role == ParamRole::Norm ? 1.0f + 0.2f * u(gen) : 0.4f * u(gen);
    }
  }
  std::vector<int32_t> ids, targets;
  for (int64_t i = 0; i < kRows * kSeq; ++i) {
    ids.push_back(static_cast<int32_t>(gen() % c.vocab_size));
    targets.push_back(static_cast<int32_t>(gen() % c.vocab_size));
  }
  train::TrainBatch batch;
  batch.inputs = ids;
  batch.targets = targets;
  const std::vector<double> norms = train::loss_weight_totals(c, batch, kSeq);

  train::TrainGraph<float> graph(c, kRows, kSeq);
  std::vector<float> grads(params.size(), 0.0f);
  std::vector<GradPoint> reached;
  std::vector<std::vector<float>> at_point;
  const train::GradPointObserver observe = [&](const GradPoint& p) {
    reached.push_back(p);
    at_point.push_back(grads);
  };
  graph.forward_backward(params, grads, batch, norms, {}, nullptr, {}, &observe);
  ASSERT_EQ(reached, plan.points());

  const std::vector<float> zeros(grads.size(), 0.0f);
  for (const GradBucket& b : plan.buckets()) {
    const std::string& name = layout.specs()[b.first_param].name;
    const auto range = [&](const std::vector<float>& v) {
      return std::vector<float>(v.begin() + b.begin, v.begin() + b.end);
    };
    const std::vector<float> final_grad = range(grads);
    EXPECT_EQ(range(at_point[b.ready_point]), final_grad) << name << " changes after its release";
    const std::vector<float>& before = b.ready_point > 0 ? at_point[b.ready_point - 1] : zeros;
    EXPECT_NE(range(before), final_grad) << name << " was final a point earlier";
  }
}

TEST(GradBuckets, ReleasePointsMatchTheWritesOfABackwardPass) {
  ModelConfig with_biases = llama(3, 16, 24, 40);
  with_biases.attention_bias = true;
  ModelConfig gpt2_mtp = gpt2(2, 16, 40, 32);
  gpt2_mtp.n_mtp_heads = 1;
  ModelConfig nanochat_mtp = nanochat(2, 16, 40);
  nanochat_mtp.n_mtp_heads = 2;
  ModelConfig weighted_embed_norm = llama(2, 16, 24, 40);
  weighted_embed_norm.embed_norm = true;
  weighted_embed_norm.tie_word_embeddings = true;
  ModelConfig qwen3 = llama(2, 16, 24, 40);
  qwen3.architecture = "Qwen3ForCausalLM";
  qwen3.traits = *find_arch_traits(qwen3.architecture);
  qwen3.qk_norm = QkNormKind::BeforeRopeWeighted;
  for (const ModelConfig* c : std::vector<const ModelConfig*>{
           &with_biases, &gpt2_mtp, &nanochat_mtp, &weighted_embed_norm, &qwen3}) {
    SCOPED_TRACE(c->architecture + " mtp " + std::to_string(c->n_mtp_heads) +
                 (c->embed_norm ? " embed_norm" : "") + (c->tie_word_embeddings ? " tied" : ""));
    expect_release_points_match_the_writes(*c);
  }
}

// ---- the cursor -------------------------------------------------------------------------------

TEST(GradBucketCursor, ReleasesEachBucketAtItsPointAndGuardsReleasedRanges) {
  const ModelConfig c = llama(2, 16, 24, 40);
  const ParamLayout layout = train::make_param_layout(c);
  const GradBucketPlan plan(c, layout, 1);  // every tensor alone
  GradBucketCursor cursor(plan);
  cursor.start();
  using K = GradPointKind;
  const int64_t down1 = layout.at(L(1) + "mlp.down_proj.weight").offset;
  const int64_t q1 = layout.at(L(1) + "self_attn.q_proj.weight").offset;
  const int64_t head = layout.at("lm_head.weight").offset;

  // Before anything is released every gradient may be written.
  cursor.check_writable(head);
  // HeadOutputs releases model.norm and lm_head (two buckets).
  auto r = cursor.reach({K::HeadOutputs, -1});
  EXPECT_EQ(r.second - r.first, 2);
  EXPECT_FAILS(cursor.check_writable(head), KILN_ERR_INTERNAL, "HeadOutputs");
  cursor.check_writable(down1);
  r = cursor.reach({K::BlockMlp, 1});
  EXPECT_EQ(r.second - r.first, 4);  // post_attention_layernorm, gate, up, down
  EXPECT_FAILS(cursor.check_writable(down1), KILN_ERR_INTERNAL, "BlockMlp 1");
  cursor.check_writable(q1);
  // Out of order: the plan expects layer 1's attention next.
  EXPECT_FAILS(cursor.reach({K::BlockMlp, 0}), KILN_ERR_INTERNAL,
               "reached BlockMlp 0 where the plan expects BlockAttention 1");
  r = cursor.reach({K::BlockAttention, 1});
  EXPECT_EQ(r.second - r.first, 5);
  r = cursor.reach({K::BlockMlp, 0});
  r = cursor.reach({K::BlockAttention, 0});
  EXPECT_FALSE(cursor.finished());
  r = cursor.reach({K::Embedding, -1});
  EXPECT_EQ(r.second - r.first, 1);
  EXPECT_TRUE(cursor.finished());
  EXPECT_EQ(cursor.released(), static_cast<int32_t>(plan.buckets().size()));
  EXPECT_FAILS(cursor.reach({K::Embedding, -1}), KILN_ERR_INTERNAL, "the end of the backward pass");
  // A new backward pass starts from nothing released.
  cursor.start();
  cursor.check_writable(head);
  EXPECT_EQ(cursor.released(), 0);
}

TEST(GradBucketCursor, PointsReleasingNothingStillAdvance) {
  // With a huge cap NanoChat's buffer is one bucket, released at the last point: every earlier
  // point releases nothing but must still be passed in order.
  const ModelConfig c = nanochat(2, 16, 40);
  const ParamLayout layout = train::make_param_layout(c);
  const GradBucketPlan plan(c, layout, int64_t{1} << 40);
  GradBucketCursor cursor(plan);
  cursor.start();
  for (size_t i = 0; i + 1 < plan.points().size(); ++i) {
    const auto r = cursor.reach(plan.points()[i]);
    EXPECT_EQ(r.first, r.second) << train::grad_point_name(plan.points()[i]);
  }
  const auto r = cursor.reach(plan.points().back());
  EXPECT_EQ(r.second - r.first, 1);
  EXPECT_FAILS(cursor.check_writable(0), KILN_ERR_INTERNAL, "Embedding");
}

// ---- KILN_DP_BUCKET_MB ------------------------------------------------------------------------

TEST(GradBucketEnv, DefaultsZeroAndFractionsOfAMiB) {
  EXPECT_EQ(train::grad_bucket_bytes_from_env(nullptr), 25 * 1048576);
  EXPECT_EQ(train::grad_bucket_bytes_from_env(""), 25 * 1048576);
  EXPECT_EQ(train::grad_bucket_bytes_from_env("0"), 0);
  EXPECT_EQ(train::grad_bucket_bytes_from_env("0.0"), 0);
  EXPECT_EQ(train::grad_bucket_bytes_from_env("1"), 1048576);
  EXPECT_EQ(train::grad_bucket_bytes_from_env("0.5"), 524288);
  EXPECT_EQ(train::grad_bucket_bytes_from_env("100"), 104857600);
  EXPECT_EQ(train::grad_bucket_bytes_from_env("1e-9"), 1);  // at least a byte
  for (const char* bad : {"abc", "-1", "1x", "nan", "inf", "1e300", " "}) {
    EXPECT_FAILS(train::grad_bucket_bytes_from_env(bad), KILN_ERR_INVALID_ARGUMENT,
                 std::string("KILN_DP_BUCKET_MB is '") + bad + "'");
  }
}

}  // namespace
}  // namespace kiln
