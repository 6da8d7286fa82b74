// kiln.h's thread-safety rules under real threads (the CI runs this under ThreadSanitizer too):
// many sessions on one model on many threads give the tokens one thread gives; a session entered
// from a second thread while in use answers KILN_ERR_BUSY; kiln_session_cancel() from another
// thread stops a prefill or a decode and leaves the session usable; a model handle may be freed
// while other threads' sessions run. Every test runs on the CPU backend and, where the build has
// the CUDA backend and a GPU is present, on the CUDA backend too (each result is compared with a
// single-threaded run on the same backend); without either, the CUDA instances skip saying why.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "abi_util.hpp"

namespace kiln_abi_test {
namespace {

// Each kiln call runs on its caller's thread only: the threads under test are the callers'. (Under
// TSan an OpenMP team would also be wrong, since libgomp's barriers are invisible to it; and a
// team per caller oversubscribes the 2-core CI machine, where spinning teams slow the test 10x.
// session_test covers sessions on threads with OpenMP teams.)
constexpr int kKilnThreads = 1;
// TSan slows kiln's arithmetic about 30x; the rounds of the longest test are cut to stay in budget.
#if defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

fs::path kjv_tiny() { return source_dir() / "models" / "kjv-tiny"; }

kiln_sampling_options sampling(float temperature) {
  kiln_sampling_options s;
  kiln_sampling_options_default(&s, sizeof s);
  s.temperature = temperature;
  return s;
}

struct GenRun {
  kiln_status status = KILN_OK;
  std::vector<int32_t> ids;
};

// Generates n tokens from a reset session with the given temperature (sampling uses the session's
// seeded RNG, so a run is a pure function of seed, prompt and options).
GenRun generate(kiln_session* s, const std::string& prompt, float temperature, int n,
                kiln_token_fn fn = nullptr, void* ud = nullptr) {
  GenRun r;
  r.ids.assign(static_cast<size_t>(n), -1);
  const kiln_sampling_options so = sampling(temperature);
  kiln_generate_options g;
  kiln_generate_options_default(&g, sizeof g);
  g.sampling = &so;
  g.max_tokens = n;
  g.ignore_eos = 1;
  g.output_ids = r.ids.data();
  g.output_ids_capacity = r.ids.size();
  g.token_fn = fn;
  g.token_user_data = ud;
  r.status = kiln_session_reset(s);
  if (r.status == KILN_OK) r.status = kiln_generate(s, prompt.data(), prompt.size(), &g, nullptr);
  return r;
}

class Concurrency : public ::testing::TestWithParam<kiln_backend> {
 protected:
  void SetUp() override {
    kiln_runtime_options o;
    kiln_runtime_options_default(&o, sizeof o);
    o.backend = GetParam();
    o.n_threads = kKilnThreads;  // the CPU backend's; the CUDA backend enqueues on the caller
    kiln_runtime* rt = nullptr;
    const kiln_status st = kiln_runtime_create(&o, &rt);
    // kiln.h: KILN_ERR_UNSUPPORTED for a build without the backend, KILN_ERR_BACKEND when the
    // build has it but there is no usable device (the message says which).
    if (GetParam() == KILN_BACKEND_CUDA && st == KILN_ERR_UNSUPPORTED) {
      GTEST_SKIP() << "this build has no CUDA backend (KILN_CUDA=OFF): " << kiln_last_error();
    }
    if (GetParam() == KILN_BACKEND_CUDA && st == KILN_ERR_BACKEND) {
      GTEST_SKIP() << "no usable GPU: " << kiln_last_error();
    }
    KILN_ASSERT_OK(st);
    rt_.reset(rt);
    kiln_runtime_info info;
    info.struct_size = sizeof info;
    KILN_ASSERT_OK(kiln_runtime_get_info(rt_.get(), &info));
    ASSERT_EQ(info.backend, GetParam()) << info.device_name;
    model_ = load(rt_.get(), kjv_tiny());
    ASSERT_TRUE(model_);
  }
  RuntimePtr rt_;
  ModelPtr model_;
};

TEST_P(Concurrency, ManySessionsOnManyThreadsMatchOneThread) {
  // Each job is (prompt, seed, temperature); 8 threads each own 2 sessions and alternate between
  // them, so sessions interleave on a thread and threads interleave on the model.
  struct Job {
    std::string prompt;
    uint64_t seed;
    float temperature;
  };
  const std::vector<Job> jobs = {
      {"In the beginning", 1, 0.0f},        {"And God said", 2, 0.9f},
      {"The LORD is my shepherd", 3, 1.0f}, {"Blessed are", 4, 0.7f},
      {"And it came to pass", 5, 0.0f},     {"Let there be light", 6, 1.2f},
  };
  constexpr int kTokens = 12, kThreads = 8, kSessionsPerThread = 2, kRounds = kSanitized ? 1 : 3;
  std::vector<std::vector<int32_t>> expected;
  for (const Job& j : jobs) {
    SessionPtr s = make_session(model_.get(), 128, j.seed);
    GenRun r = generate(s.get(), j.prompt, j.temperature, kTokens);
    ASSERT_EQ(r.status, KILN_OK) << kiln_last_error();
    expected.push_back(r.ids);
  }

  std::atomic<int> runs{0}, mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<SessionPtr> sessions;
      std::vector<size_t> job_of;
      for (int k = 0; k < kSessionsPerThread; ++k) {
        const size_t j = static_cast<size_t>(t * kSessionsPerThread + k) % jobs.size();
        kiln_session_options o;
        kiln_session_options_default(&o, sizeof o);
        o.context_length = 128;
        o.seed = jobs[j].seed;
        kiln_session* s = nullptr;
        if (kiln_session_create(model_.get(), &o, &s) != KILN_OK) {
          ++errors;
          return;
        }
        sessions.emplace_back(s);
        job_of.push_back(j);
      }
      for (int round = 0; round < kRounds; ++round) {
        for (size_t k = 0; k < sessions.size(); ++k) {
          const Job& j = jobs[job_of[k]];
          GenRun r = generate(sessions[k].get(), j.prompt, j.temperature, kTokens);
          // Read-only model calls interleave with the sessions' work.
          int32_t ids[64];
          size_t n = 0;
          if (r.status != KILN_OK || kiln_tokenize(model_.get(), j.prompt.data(), j.prompt.size(),
                                                   0, ids, 64, &n) != KILN_OK) {
            ++errors;
          } else if (r.ids != expected[job_of[k]]) {
            ++mismatches;
          }
          ++runs;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(runs.load(), kThreads * kSessionsPerThread * kRounds);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

// A token callback that parks the generating thread until the main thread lets it go, so that
// another thread can act on the session while it is certainly inside kiln_generate.
struct Rendezvous {
  std::mutex mu;
  std::condition_variable cv;
  int park_at = 2;  // the token at which to park
  int seen = 0;
  bool parked = false;
  bool released = false;
};

int park(const char*, size_t, int32_t id, void* ud) {
  auto* r = static_cast<Rendezvous*>(ud);
  if (id < 0 || ++r->seen != r->park_at) return 0;
  std::unique_lock lock(r->mu);
  r->parked = true;
  r->cv.notify_all();
  r->cv.wait(lock, [&] { return r->released; });
  return 0;
}

TEST_P(Concurrency, ASessionInUseAnswersBusyToAnotherThread) {
  SessionPtr s = make_session(model_.get(), 128, 7);
  Rendezvous rv;
  GenRun owner_run;
  std::thread owner([&] { owner_run = generate(s.get(), "In the beginning", 0.0f, 6, park, &rv); });
  {
    std::unique_lock lock(rv.mu);
    rv.cv.wait(lock, [&] { return rv.parked; });
  }
  // Every session call from this thread is refused, and refused without side effects.
  int32_t id = 5, n_past = -1;
  size_t n = 0;
  EXPECT_EQ(kiln_forward(s.get(), &id, 1, KILN_LOGITS_NONE, nullptr, 0, &n), KILN_ERR_BUSY);
  EXPECT_NE(std::string(kiln_last_error()).find("another thread"), std::string::npos)
      << kiln_last_error();
  EXPECT_EQ(kiln_generate(s.get(), "x", 1, nullptr, nullptr), KILN_ERR_BUSY);
  EXPECT_EQ(kiln_generate_ids(s.get(), &id, 1, nullptr, nullptr), KILN_ERR_BUSY);
  EXPECT_EQ(kiln_session_reset(s.get()), KILN_ERR_BUSY);
  EXPECT_EQ(kiln_session_position(s.get(), &n_past, nullptr), KILN_ERR_BUSY);
  std::vector<float> logits(4096, 0.0f);
  EXPECT_EQ(kiln_sample(s.get(), logits.data(), logits.size(), nullptr, &id), KILN_ERR_BUSY);
  {
    std::lock_guard lock(rv.mu);
    rv.released = true;
  }
  rv.cv.notify_all();
  owner.join();
  // The owner's run was not disturbed: same tokens as an undisturbed session.
  ASSERT_EQ(owner_run.status, KILN_OK) << kiln_last_error();
  SessionPtr fresh = make_session(model_.get(), 128, 7);
  EXPECT_EQ(owner_run.ids, generate(fresh.get(), "In the beginning", 0.0f, 6).ids);
  // And the session is free again for this thread.
  KILN_ASSERT_OK(kiln_session_position(s.get(), &n_past, nullptr));
}

TEST_P(Concurrency, CancelFromAnotherThreadStopsDecodeAndTheSessionContinues) {
  SessionPtr s = make_session(model_.get(), 128, 7);
  SessionPtr ref = make_session(model_.get(), 128, 7);
  const GenRun expected = generate(ref.get(), "In the beginning", 0.0f, 8);
  ASSERT_EQ(expected.status, KILN_OK);

  Rendezvous rv;
  rv.park_at = 3;
  GenRun cancelled;
  std::thread owner([&] { cancelled = generate(s.get(), "In the beginning", 0.0f, 8, park, &rv); });
  {
    std::unique_lock lock(rv.mu);
    rv.cv.wait(lock, [&] { return rv.parked; });
  }
  KILN_ASSERT_OK(kiln_session_cancel(s.get()));  // while the owner is inside kiln_generate
  {
    std::lock_guard lock(rv.mu);
    rv.released = true;
  }
  rv.cv.notify_all();
  owner.join();
  EXPECT_EQ(cancelled.status, KILN_ERR_CANCELLED);
  // Tokens 1..3 were produced before the stop.
  EXPECT_TRUE(std::equal(expected.ids.begin(), expected.ids.begin() + 3, cancelled.ids.begin()));
  // The next call runs normally (the cancel was consumed by the call it stopped).
  const GenRun again = generate(s.get(), "In the beginning", 0.0f, 8);
  EXPECT_EQ(again.status, KILN_OK) << kiln_last_error();
  EXPECT_EQ(again.ids, expected.ids);
}

TEST_P(Concurrency, CancelFromAnotherThreadStopsPrefillAndTheSessionContinues) {
  // A prompt of 480 ids is two prefill chunks; another thread keeps cancelling until the call
  // returns. Wherever the cancel lands (before the first layer or between layers), the call
  // returns KILN_ERR_CANCELLED with whole chunks in the cache, and feeding the rest of the prompt
  // then gives the logits of an uncancelled run. (A delayed first cancel may come too late on a
  // loaded machine: then the call completes, and must have the uncancelled logits.)
  constexpr size_t kPrompt = 480;
  SessionPtr s = make_session(model_.get(), 512, 7);
  std::vector<int32_t> prompt(kPrompt);
  for (size_t i = 0; i < kPrompt; ++i) prompt[i] = static_cast<int32_t>(3 + (i * 37) % 4000);
  std::vector<float> expected(4096), got(4096);
  size_t n = 0;
  std::chrono::duration<double> uncancelled{};
  {
    SessionPtr ref = make_session(model_.get(), 512, 7);
    const auto t0 = std::chrono::steady_clock::now();
    KILN_ASSERT_OK(kiln_forward(ref.get(), prompt.data(), prompt.size(), KILN_LOGITS_LAST,
                                expected.data(), expected.size(), &n));
    uncancelled = std::chrono::steady_clock::now() - t0;
  }
  // The first trial's first cancel is sent before the call starts (the main thread waits for it):
  // a cancel pending when a call starts stops it (kiln.h), so at least one prefill is cancelled
  // however fast the backend — on a GPU the whole prefill may take less than starting a thread.
  // The other trials cancel after about a quarter and a half of an uncancelled run (so that,
  // timing permitting, the cancel lands in the first and in the second chunk).
  const double delay_fraction[3] = {0.0, 0.25, 0.5};

  int landed_inside = 0, cancelled = 0;
  for (int trial = 0; trial < 3; ++trial) {
    std::atomic<bool> done{false}, first_sent{false};
    std::thread canceller([&] {
      std::this_thread::sleep_for(uncancelled * delay_fraction[trial]);
      while (!done.load()) {
        kiln_session_cancel(s.get());
        first_sent.store(true);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    while (trial == 0 && !first_sent.load()) std::this_thread::yield();
    const kiln_status st = kiln_forward(s.get(), prompt.data(), prompt.size(), KILN_LOGITS_LAST,
                                        got.data(), got.size(), &n);
    done.store(true);
    canceller.join();
    int32_t n_past = -1;
    KILN_ASSERT_OK(kiln_session_position(s.get(), &n_past, nullptr));
    if (st == KILN_OK) {
      EXPECT_EQ(n_past, static_cast<int32_t>(kPrompt));
      EXPECT_LT(rel_l2(got, expected), 1e-5);
      KILN_ASSERT_OK(kiln_session_reset(s.get()));
      n_past = 0;
    } else {
      EXPECT_EQ(st, KILN_ERR_CANCELLED) << kiln_last_error();
      EXPECT_TRUE(n_past == 0 || n_past == 256) << n_past;
      ++cancelled;
      landed_inside += n_past > 0;
    }
    // The canceller may have cancelled once more after the call returned, and a cancel that comes
    // when no call runs stops the next call. Cancel once more and let an empty call take it, so
    // the flag is known to be clear and the cache is untouched.
    KILN_ASSERT_OK(kiln_session_cancel(s.get()));
    EXPECT_EQ(kiln_forward(s.get(), nullptr, 0, KILN_LOGITS_NONE, nullptr, 0, &n),
              KILN_ERR_CANCELLED);
    // Resume: the cache keeps the chunks processed before the stop; feed the rest of the prompt.
    KILN_ASSERT_OK(kiln_forward(s.get(), prompt.data() + n_past, kPrompt - size_t(n_past),
                                KILN_LOGITS_LAST, got.data(), got.size(), &n));
    EXPECT_LT(rel_l2(got, expected), 1e-5);
    KILN_ASSERT_OK(kiln_session_reset(s.get()));
  }
  EXPECT_GE(cancelled, 1) << "no prefill was cancelled";
  std::printf("[concurrency] prefills cancelled: %d of 3, %d of them after the first chunk\n",
              cancelled, landed_inside);
}

TEST_P(Concurrency, ModelHandleFreedWhileOtherThreadsGenerate) {
  SessionPtr ref = make_session(model_.get(), 128, 11);
  const GenRun expected = generate(ref.get(), "And God said", 1.0f, 10);
  std::vector<SessionPtr> sessions;
  for (int t = 0; t < 4; ++t) sessions.push_back(make_session(model_.get(), 128, 11));
  std::atomic<int> bad{0};
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      ++started;
      for (int k = 0; k < (kSanitized ? 1 : 3); ++k) {
        const GenRun r = generate(sessions[static_cast<size_t>(t)].get(), "And God said", 1.0f, 10);
        if (r.status != KILN_OK || r.ids != expected.ids) ++bad;
      }
    });
  }
  while (started.load() < 4) std::this_thread::yield();
  ref.reset();
  model_.reset();  // the sessions keep the model alive
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, Concurrency,
                         ::testing::Values(KILN_BACKEND_CPU, KILN_BACKEND_CUDA),
                         [](const ::testing::TestParamInfo<kiln_backend>& info) {
                           return std::string(info.param == KILN_BACKEND_CUDA ? "cuda" : "cpu");
                         });

}  // namespace
}  // namespace kiln_abi_test
