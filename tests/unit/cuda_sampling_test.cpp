// The device sampler (src/backend/cuda/device_sampler.hpp, kernels/sampling.cu) against the host
// sampler sample_token (src/session/sampler.cpp, itself checked against an independent reference
// in sampler_test): random logits of awkward sizes with planted ties, signed zeros, -inf and NaN,
// thousands of (options, u) combinations incl. penalties over histories with repeated and
// out-of-range ids; the ids must be equal. Plus determinism and the all-NaN error. Without a GPU
// (CI) every test skips.
#include <gtest/gtest.h>

#if defined(KILN_HAVE_CUDA)

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/cuda_handles.hpp"
#include "backend/cuda/device_memory.hpp"
#include "backend/cuda/device_sampler.hpp"
#include "core/error.hpp"
#include "cuda_test_util.hpp"
#include "session/sampler.hpp"

namespace kiln::cuda {
namespace {

using test::DeviceArray;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Logits like a model's (normal, spread 3) with the awkward cases planted: the maximum repeated at
// several ids, ties elsewhere, -0 and +0 side by side at the top in one pattern, -inf and NaN.
enum class Pattern { Plain, TiesAndSpecials, SignedZeroTop };

std::vector<float> make_logits(size_t n, Pattern pattern, std::mt19937& rng) {
  std::vector<float> v = test::random_normal(n, rng, 3.0f);
  if (pattern == Pattern::Plain || n < 4) return v;
  std::uniform_int_distribution<size_t> pick(0, n - 1);
  if (pattern == Pattern::SignedZeroTop) {
    for (float& x : v) x = -std::fabs(x) - 0.5f;
    for (int i = 0; i < 4; ++i) v[pick(rng)] = (i % 2 == 0) ? -0.0f : 0.0f;
    return v;
  }
  float max = v[0];
  for (float x : v) max = std::max(max, x);
  for (int i = 0; i < 3; ++i) v[pick(rng)] = max;  // equal maxima
  for (size_t i = 0; i < std::max<size_t>(1, n / 50); ++i) v[pick(rng)] = v[pick(rng)];  // ties
  for (int i = 0; i < 3; ++i) v[pick(rng)] = -kInf;
  for (int i = 0; i < 3; ++i) v[pick(rng)] = kNaN;
  return v;
}

// A history with repeats and ids outside [0, vocab) (the host ignores those).
std::vector<int32_t> make_history(size_t vocab, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> id(0, static_cast<int32_t>(vocab) - 1);
  std::vector<int32_t> h;
  for (int i = 0; i < 40; ++i) h.push_back(id(rng));
  for (int i = 0; i < 10; ++i) h.push_back(h[static_cast<size_t>(i) * 3]);  // repeats
  h.push_back(-1);
  h.push_back(static_cast<int32_t>(vocab));
  h.push_back(static_cast<int32_t>(vocab) + 17);
  return h;
}

struct Trial {
  SamplingParams params;
  uint64_t seed;
};

std::string describe(const SamplingParams& p) {
  std::ostringstream os;
  os << "temperature " << p.temperature << " top_k " << p.top_k << " top_p " << p.top_p << " min_p "
     << p.min_p << " repetition " << p.repetition_penalty << " presence " << p.presence_penalty
     << " frequency " << p.frequency_penalty << " last_n " << p.penalty_last_n;
  return os.str();
}

std::vector<SamplingParams> all_params() {
  std::vector<SamplingParams> out;
  auto with_penalties = [&](SamplingParams p) {
    p.repetition_penalty = 1.0f;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    out.push_back(p);
    p.repetition_penalty = 1.3f;
    p.presence_penalty = 0.4f;
    p.frequency_penalty = 0.15f;
    p.penalty_last_n = 64;
    out.push_back(p);
    p.repetition_penalty = 0.7f;  // below 1 raises: still the CTRL rule
    p.penalty_last_n = -1;
    out.push_back(p);
  };
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  with_penalties(greedy);
  for (float t : {0.3f, 1.0f, 2.0f}) {
    for (int32_t k : {0, 1, 40, 5000}) {
      for (float top_p : {0.5f, 0.95f, 1.0f}) {
        for (float min_p : {0.0f, 0.05f, 0.5f}) {
          SamplingParams p;
          p.temperature = t;
          p.top_k = k;
          p.top_p = top_p;
          p.min_p = min_p;
          with_penalties(p);
        }
      }
    }
  }
  return out;
}

class CudaSampling : public ::testing::Test {
 protected:
  void SetUp() override {
    KILN_SKIP_WITHOUT_CUDA();
    allocator_ = DeviceAllocator::create(0, 0, "test GPU");
    stream_ = std::make_unique<Stream>();
  }

  // The device's id for `logits` (uploaded fresh: the draw modifies them) with the u the host
  // sampler would draw from rng; the host's id from sample_token with that rng.
  struct Pair {
    int32_t device, host;
  };
  Pair both(DeviceSampler& sampler, DeviceArray<float>& d_logits, const std::vector<float>& logits,
            const std::vector<int32_t>& history, const SamplingParams& p, const Rng& rng) {
    Rng host_rng = rng, device_rng = rng;
    std::vector<float> host_logits = logits;
    const int32_t host = sample_token(host_logits, history, p, host_rng);
    d_logits.upload(logits);
    std::vector<int32_t> ids, counts;
    penalty_counts(history, p, logits.size(), ids, counts);
    DeviceSampleRequest req;
    req.temperature = p.temperature;
    req.top_k = p.top_k;
    req.top_p = p.top_p;
    req.min_p = p.min_p;
    req.repetition_penalty = p.repetition_penalty;
    req.presence_penalty = p.presence_penalty;
    req.frequency_penalty = p.frequency_penalty;
    req.penalty_ids = ids;
    req.penalty_counts = counts;
    if (p.temperature > 0.0f) req.u = device_rng.next_double();
    const int32_t device = sampler.sample(d_logits.get(), req, stream_->get());
    return {device, host};
  }

  std::shared_ptr<DeviceAllocator> allocator_;
  std::unique_ptr<Stream> stream_;
};

TEST_F(CudaSampling, DeviceIdsEqualHostSampler) {
  const std::vector<SamplingParams> params = all_params();
  std::mt19937 rng(20261125);
  size_t trials = 0, mismatches = 0;
  std::string first_mismatch;
  for (size_t vocab : {size_t{1}, size_t{7}, size_t{1000}, size_t{151936}}) {
    DeviceSampler sampler(allocator_, static_cast<int64_t>(vocab));
    DeviceArray<float> d_logits(vocab);
    for (Pattern pattern : {Pattern::Plain, Pattern::TiesAndSpecials, Pattern::SignedZeroTop}) {
      const std::vector<float> logits = make_logits(vocab, pattern, rng);
      const std::vector<int32_t> history = make_history(vocab, rng);
      // Fewer draws per option set for the large vocabulary (the host sorts it in full).
      const int draws = vocab > 10000 ? 2 : 6;
      for (const SamplingParams& p : params) {
        for (int d = 0; d < (p.temperature > 0.0f ? draws : 1); ++d) {
          const Rng r(rng());
          const Pair got = both(sampler, d_logits, logits, history, p, r);
          ++trials;
          if (got.device != got.host) {
            if (mismatches++ == 0) {
              std::ostringstream os;
              os << "vocab " << vocab << " pattern " << static_cast<int>(pattern) << " "
                 << describe(p) << " u " << Rng(r).next_double() << ": device " << got.device
                 << " host " << got.host;
              first_mismatch = os.str();
            }
          }
        }
      }
    }
  }
  std::printf("device sampler vs host sampler: %zu trials, %zu mismatches\n", trials, mismatches);
  EXPECT_GT(trials, 3000u);
  EXPECT_EQ(mismatches, 0u) << "first mismatch: " << first_mismatch;
}

// Given draws, including the inverse CDF's ends (u = 0: the first kept candidate; u just below 1:
// the last kept, also where the running sum stays below u by rounding), against the rule written
// out independently in float64.
TEST_F(CudaSampling, GivenDrawsMatchAFloat64Reference) {
  std::mt19937 rng(7);
  const size_t vocab = 1000;
  const std::vector<float> logits = make_logits(vocab, Pattern::TiesAndSpecials, rng);
  DeviceSampler sampler(allocator_, vocab);
  DeviceArray<float> d_logits(vocab);
  for (double u : {0.0, 0.5, 1.0 - 0x1.0p-53}) {
    for (int32_t k : {0, 3, 40}) {
      SamplingParams p;
      p.temperature = 1.0f;
      p.top_k = k;
      const std::vector<float>& host_logits = logits;  // temperature 1: scaling changes nothing
      d_logits.upload(logits);
      DeviceSampleRequest req;
      req.temperature = p.temperature;
      req.top_k = p.top_k;
      req.top_p = p.top_p;
      req.min_p = p.min_p;
      req.u = u;
      const int32_t device = sampler.sample(d_logits.get(), req, stream_->get());
      // sample_token cannot be given a u, so the reference here is the documented rule written
      // out in float64: rank by (logit desc, id asc), top-k, softmax, min-p, top-p, then the
      // first kept candidate whose cumulative renormalised probability exceeds u.
      std::vector<std::pair<float, int32_t>> c;
      for (size_t i = 0; i < vocab; ++i) {
        if (!std::isnan(host_logits[i])) c.push_back({host_logits[i], static_cast<int32_t>(i)});
      }
      std::sort(c.begin(), c.end(), [](auto& a, auto& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      });
      if (k > 0 && static_cast<size_t>(k) < c.size()) c.resize(static_cast<size_t>(k));
      std::vector<double> w;
      double total = 0;
      for (auto& [l, id] : c) {
        w.push_back(std::exp(static_cast<double>(l) - static_cast<double>(c[0].first)));
        total += w.back();
      }
      size_t keep = c.size();
      const double threshold = static_cast<double>(p.min_p) * (w[0] / total);
      for (size_t i = 0; i < c.size(); ++i) {
        if (w[i] / total < threshold) {
          keep = i;
          break;
        }
      }
      double cum = 0;
      for (size_t i = 0; i < keep; ++i) {
        cum += w[i] / total;
        if (cum >= static_cast<double>(p.top_p)) {
          keep = i + 1;
          break;
        }
      }
      double mass = 0;
      for (size_t i = 0; i < keep; ++i) mass += w[i] / total;
      int32_t expected = c[keep - 1].second;  // when the running sum stays below u
      double run = 0;
      for (size_t i = 0; i < keep; ++i) {
        run += (w[i] / total) / mass;
        if (u < run) {
          expected = c[i].second;
          break;
        }
      }
      EXPECT_EQ(device, expected) << "u " << u << " top_k " << k;
    }
  }
}

TEST_F(CudaSampling, SameInputsGiveTheSameIdEveryTime) {
  std::mt19937 rng(99);
  const size_t vocab = 151936;
  const std::vector<float> logits = make_logits(vocab, Pattern::TiesAndSpecials, rng);
  DeviceSampler sampler(allocator_, vocab);
  DeviceArray<float> d_logits(vocab);
  for (int32_t k : {0, 40}) {
    DeviceSampleRequest req;
    req.temperature = 1.0f;
    req.top_k = k;
    req.top_p = k == 0 ? 1.0f : 0.95f;
    req.u = 0.637;
    d_logits.upload(logits);
    const int32_t first = sampler.sample(d_logits.get(), req, stream_->get());
    for (int i = 0; i < 20; ++i) {
      d_logits.upload(logits);
      ASSERT_EQ(sampler.sample(d_logits.get(), req, stream_->get()), first) << "top_k " << k;
    }
  }
}

TEST_F(CudaSampling, AllNaNRowMatchesHost) {
  for (size_t vocab : {size_t{1}, size_t{7}, size_t{151936}}) {
    const std::vector<float> logits(vocab, kNaN);
    DeviceSampler sampler(allocator_, static_cast<int64_t>(vocab));
    DeviceArray<float> d_logits(vocab);
    // Greedy: the host's loop ends on the last id.
    SamplingParams greedy;
    greedy.temperature = 0.0f;
    const Pair g = both(sampler, d_logits, logits, {}, greedy, Rng(1));
    EXPECT_EQ(g.device, g.host);
    EXPECT_EQ(g.device, static_cast<int32_t>(vocab) - 1);
    // Sampling: both refuse, with the same status and message.
    SamplingParams p;
    p.temperature = 0.8f;
    std::string host_message, device_message;
    kiln_status host_status = KILN_OK, device_status = KILN_OK;
    try {
      std::vector<float> l = logits;
      Rng r(1);
      sample_token(l, {}, p, r);
    } catch (const Error& e) {
      host_status = e.status();
      host_message = e.what();
    }
    try {
      d_logits.upload(logits);
      DeviceSampleRequest req;
      req.temperature = p.temperature;
      req.top_k = p.top_k;
      req.top_p = p.top_p;
      req.min_p = p.min_p;
      req.u = 0.25;
      sampler.sample(d_logits.get(), req, stream_->get());
    } catch (const Error& e) {
      device_status = e.status();
      device_message = e.what();
    }
    EXPECT_EQ(host_status, KILN_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(device_status, host_status);
    EXPECT_EQ(device_message, host_message);
  }
}

}  // namespace
}  // namespace kiln::cuda

#else

TEST(CudaSampling, NotBuilt) { GTEST_SKIP() << "built without the CUDA backend"; }

#endif
