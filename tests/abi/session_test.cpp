// Session behaviour through the public ABI: seeded sampling, streaming, stop conditions,
// cancellation, thread-misuse detection, context limits.
#include <atomic>
#include <thread>

#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

class SessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    rt_ = make_cpu_runtime();
    model_ = load(rt_.get(), fixtures() / "tiny-qwen2");
    ASSERT_TRUE(model_);
  }
  RuntimePtr rt_;
  ModelPtr model_;
};

struct Collected {
  std::string text;
  std::vector<int32_t> ids;
  int stop_after = -1;  // return non-zero once this many tokens were seen
  kiln_session* cancel_target = nullptr;
  kiln_session* reenter = nullptr;
  kiln_status reenter_status = KILN_OK;
};

int collect(const char* text, size_t len, int32_t id, void* ud) {
  auto* c = static_cast<Collected*>(ud);
  c->text.append(text, len);
  if (id >= 0) c->ids.push_back(id);
  if (c->reenter) {
    int32_t tok = 1;
    size_t n = 0;
    c->reenter_status = kiln_forward(c->reenter, &tok, 1, KILN_LOGITS_NONE, nullptr, 0, &n);
    c->reenter = nullptr;
  }
  if (c->cancel_target && c->ids.size() == 3) kiln_session_cancel(c->cancel_target);
  return (c->stop_after >= 0 && int(c->ids.size()) >= c->stop_after) ? 1 : 0;
}

struct GenRun {
  kiln_status status;
  kiln_generate_result result;
  Collected got;
};

GenRun generate(kiln_session* s, const std::string& prompt, float temperature, int max_tokens,
             std::vector<const char*> stops = {}, Collected seed_collect = {}) {
  GenRun r{};
  r.got = std::move(seed_collect);
  kiln_sampling_options so;
  kiln_sampling_options_default(&so, sizeof so);
  so.temperature = temperature;
  so.top_k = 0;
  so.top_p = 1.0f;
  so.min_p = 0.0f;
  kiln_generate_options g;
  kiln_generate_options_default(&g, sizeof g);
  g.sampling = &so;
  g.max_tokens = max_tokens;
  g.ignore_eos = 1;
  g.token_fn = collect;
  g.token_user_data = &r.got;
  g.stop_strings = stops.data();
  g.n_stop_strings = stops.size();
  r.result.struct_size = sizeof r.result;
  r.status = kiln_generate(s, prompt.data(), prompt.size(), &g, &r.result);
  return r;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = s[i];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    i += n;
  }
  return true;
}

TEST_F(SessionTest, SameSeedSameTokensDifferentSeedDifferentTokens) {
  auto a = make_session(model_.get(), 0, 42);
  auto b = make_session(model_.get(), 0, 42);
  auto c = make_session(model_.get(), 0, 43);
  GenRun ra = generate(a.get(), "The quick brown fox", 1.0f, 24);
  GenRun rb = generate(b.get(), "The quick brown fox", 1.0f, 24);
  GenRun rc = generate(c.get(), "The quick brown fox", 1.0f, 24);
  ASSERT_EQ(ra.status, KILN_OK) << kiln_last_error();
  ASSERT_EQ(ra.got.ids.size(), 24u);
  EXPECT_EQ(ra.got.ids, rb.got.ids);
  EXPECT_NE(ra.got.ids, rc.got.ids);
  // reset re-seeds: the same session repeats itself.
  KILN_ASSERT_OK(kiln_session_reset(a.get()));
  GenRun ra2 = generate(a.get(), "The quick brown fox", 1.0f, 24);
  EXPECT_EQ(ra.got.ids, ra2.got.ids);
}

TEST_F(SessionTest, StreamedTextIsValidUtf8AndEqualsDetokenizedIds) {
  auto s = make_session(model_.get(), 0, 7);
  GenRun r = generate(s.get(), "Hello world", 1.0f, 40);
  ASSERT_EQ(r.status, KILN_OK) << kiln_last_error();
  EXPECT_TRUE(valid_utf8(r.got.text));
  std::string decoded(4096, '\0');
  size_t len = 0;
  KILN_ASSERT_OK(kiln_detokenize(model_.get(), r.got.ids.data(), r.got.ids.size(),
                                 KILN_DETOKENIZE_SKIP_SPECIAL, decoded.data(), decoded.size(),
                                 &len));
  decoded.resize(len);
  EXPECT_EQ(r.got.text, decoded);
  EXPECT_EQ(r.result.n_generated, 40);
  EXPECT_EQ(r.result.stop_reason, KILN_STOP_MAX_TOKENS);
  EXPECT_GT(r.result.decode_tokens_per_second, 0.0);
}

TEST_F(SessionTest, StopStringEndsGenerationAndIsNotEmitted) {
  auto s = make_session(model_.get());
  GenRun full = generate(s.get(), "The quick brown fox", 0.0f, 24);
  ASSERT_EQ(full.status, KILN_OK);
  ASSERT_GE(full.got.text.size(), 8u);
  // A stop string taken from the middle of the greedy text.
  const size_t at = full.got.text.size() / 2;
  const std::string stop = full.got.text.substr(at, 3);
  const size_t first = full.got.text.find(stop);
  KILN_ASSERT_OK(kiln_session_reset(s.get()));
  GenRun cut = generate(s.get(), "The quick brown fox", 0.0f, 24, {stop.c_str()});
  ASSERT_EQ(cut.status, KILN_OK) << kiln_last_error();
  EXPECT_EQ(cut.result.stop_reason, KILN_STOP_STRING);
  EXPECT_EQ(cut.got.text, full.got.text.substr(0, first));
}

TEST_F(SessionTest, CallbackStopAndMaxTokens) {
  auto s = make_session(model_.get());
  Collected c;
  c.stop_after = 5;
  GenRun r = generate(s.get(), "Hello", 1.0f, 50, {}, c);
  ASSERT_EQ(r.status, KILN_OK);
  EXPECT_EQ(r.result.stop_reason, KILN_STOP_CALLBACK);
  EXPECT_EQ(r.result.n_generated, 5);
}

TEST_F(SessionTest, ContextFullIsReportedAndSessionStaysUsable) {
  auto s = make_session(model_.get(), 12);
  int32_t pos = 0, ctx = 0;
  KILN_ASSERT_OK(kiln_session_position(s.get(), &pos, &ctx));
  EXPECT_EQ(ctx, 12);
  GenRun r = generate(s.get(), "Hello", 1.0f, 100);
  ASSERT_EQ(r.status, KILN_OK) << kiln_last_error();
  EXPECT_EQ(r.result.stop_reason, KILN_STOP_CONTEXT_FULL);
  KILN_ASSERT_OK(kiln_session_position(s.get(), &pos, &ctx));
  EXPECT_EQ(pos, 12);
  // A prompt that cannot fit at all is refused before any work.
  std::vector<int32_t> ids(13, 5);
  size_t n = 0;
  EXPECT_EQ(kiln_forward(s.get(), ids.data(), ids.size(), KILN_LOGITS_NONE, nullptr, 0, &n),
            KILN_ERR_CONTEXT_FULL);
  EXPECT_NE(std::string(kiln_last_error()).find("12"), std::string::npos);
  KILN_ASSERT_OK(kiln_session_reset(s.get()));
  KILN_ASSERT_OK(kiln_forward(s.get(), ids.data(), 12, KILN_LOGITS_NONE, nullptr, 0, &n));
}

TEST_F(SessionTest, CancelStopsTheRunningCallAndLeavesTheSessionUsable) {
  auto s = make_session(model_.get());
  Collected c;
  c.cancel_target = s.get();
  GenRun r = generate(s.get(), "Hello", 1.0f, 50, {}, c);
  EXPECT_EQ(r.status, KILN_ERR_CANCELLED);
  EXPECT_EQ(r.got.ids.size(), 3u);
  // Cancel before a call: that call is cancelled, the one after runs.
  KILN_ASSERT_OK(kiln_session_cancel(s.get()));
  int32_t id = 3;
  size_t n = 0;
  EXPECT_EQ(kiln_forward(s.get(), &id, 1, KILN_LOGITS_NONE, nullptr, 0, &n), KILN_ERR_CANCELLED);
  KILN_ASSERT_OK(kiln_forward(s.get(), &id, 1, KILN_LOGITS_NONE, nullptr, 0, &n));
}

TEST_F(SessionTest, UsingASessionFromTwoPlacesAtOnceIsDetected) {
  auto s = make_session(model_.get());
  Collected c;
  c.reenter = s.get();
  GenRun r = generate(s.get(), "Hello", 1.0f, 3, {}, c);
  ASSERT_EQ(r.status, KILN_OK);
  EXPECT_EQ(r.got.reenter_status, KILN_ERR_BUSY);
}

TEST_F(SessionTest, ManySessionsOnOneModelFromManyThreadsAgreeWithOneThread) {
  auto ref = make_session(model_.get(), 0, 9);
  GenRun expected = generate(ref.get(), "The quick brown fox", 1.0f, 16);
  ASSERT_EQ(expected.status, KILN_OK);
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto s = make_session(model_.get(), 0, 9);
      for (int k = 0; k < 3; ++k) {
        kiln_session_reset(s.get());
        GenRun r = generate(s.get(), "The quick brown fox", 1.0f, 16);
        if (r.status != KILN_OK || r.got.ids != expected.got.ids) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(SessionTest, ModelHandleMayBeFreedBeforeItsSessions) {
  auto s = make_session(model_.get());
  model_.reset();
  GenRun r = generate(s.get(), "Hello", 0.0f, 4);
  EXPECT_EQ(r.status, KILN_OK) << kiln_last_error();
  EXPECT_EQ(r.result.n_generated, 4);
}

}  // namespace
}  // namespace kiln_abi_test
