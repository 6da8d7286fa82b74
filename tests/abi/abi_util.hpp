// Helpers for the ABI tests, which see kiln only through kiln.h (linked against libkiln.so).
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kiln.h"

namespace kiln_abi_test {

namespace fs = std::filesystem;

struct RuntimeDeleter {
  void operator()(kiln_runtime* r) const { kiln_runtime_free(r); }
};
struct ModelDeleter {
  void operator()(kiln_model* m) const { kiln_model_free(m); }
};
struct SessionDeleter {
  void operator()(kiln_session* s) const { kiln_session_free(s); }
};
using RuntimePtr = std::unique_ptr<kiln_runtime, RuntimeDeleter>;
using ModelPtr = std::unique_ptr<kiln_model, ModelDeleter>;
using SessionPtr = std::unique_ptr<kiln_session, SessionDeleter>;

inline fs::path fixtures() { return fs::path(KILN_FIXTURES_DIR); }
inline fs::path source_dir() { return fs::path(KILN_SOURCE_DIR); }

#define KILN_ASSERT_OK(expr)                                                             \
  do {                                                                                   \
    kiln_status kiln_st_ = (expr);                                                       \
    ASSERT_EQ(kiln_st_, KILN_OK) << #expr << ": " << kiln_status_name(kiln_st_) << ": " \
                                 << kiln_last_error();                                   \
  } while (0)

inline RuntimePtr make_cpu_runtime(int threads = 2) {
  kiln_runtime_options o;
  kiln_runtime_options_default(&o, sizeof o);
  o.backend = KILN_BACKEND_CPU;
  o.n_threads = threads;
  kiln_runtime* rt = nullptr;
  kiln_status st = kiln_runtime_create(&o, &rt);
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return RuntimePtr(rt);
}

inline ModelPtr load(kiln_runtime* rt, const fs::path& dir) {
  kiln_model* m = nullptr;
  kiln_status st = kiln_model_load(rt, dir.string().c_str(), nullptr, &m);
  EXPECT_EQ(st, KILN_OK) << dir << ": " << kiln_status_name(st) << ": " << kiln_last_error();
  return ModelPtr(m);
}

inline SessionPtr make_session(kiln_model* m, int32_t ctx = 0, uint64_t seed = 1) {
  kiln_session_options o;
  kiln_session_options_default(&o, sizeof o);
  o.context_length = ctx;
  o.seed = seed;
  kiln_session* s = nullptr;
  kiln_status st = kiln_session_create(m, &o, &s);
  EXPECT_EQ(st, KILN_OK) << kiln_last_error();
  return SessionPtr(s);
}

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::vector<float> read_f32(const fs::path& p) {
  std::string b = read_file(p);
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

inline double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(a[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num / den);
}

// A copy of a model directory the test can damage.
inline fs::path copy_model_dir(const fs::path& src, const std::string& tag) {
  fs::path dst = fs::temp_directory_path() /
                 ("kiln-abi-" + std::to_string(::getpid()) + "-" + tag);
  fs::remove_all(dst);
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(src)) fs::copy(e.path(), dst / e.path().filename());
  return dst;
}

}  // namespace kiln_abi_test
