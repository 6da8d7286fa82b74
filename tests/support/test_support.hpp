// Helpers shared by the unit tests: fixture paths, reading reference files, error comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"

namespace kiln::test {

std::filesystem::path fixtures_dir();  // tests/fixtures
std::filesystem::path source_dir();    // the repo root
// A fresh empty directory under the system temp dir, removed at process exit.
std::filesystem::path temp_dir(const std::string& tag);

std::vector<float> read_f32_file(const std::filesystem::path& path);
std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& bytes);

// ||a - b|| / ||b|| in float64.
double relative_l2(const float* a, const float* b, size_t n);
// Gunzips a .gz fixture into a temp file (cached per process) and returns its path.
std::filesystem::path gunzip_fixture(const std::filesystem::path& gz_path);

// The status and message of the kiln::Error that f() throws; {KILN_OK, ""} when it returns.
template <class F>
std::pair<kiln_status, std::string> status_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return {e.status(), e.what()};
  }
  return {KILN_OK, ""};
}

}  // namespace kiln::test

// expr throws a kiln::Error of `status` whose message contains `needle`.
#define EXPECT_FAILS(expr, status, needle)                                    \
  do {                                                                        \
    const auto [got_, msg_] = ::kiln::test::status_of([&] { (void)(expr); }); \
    EXPECT_EQ(got_, status) << msg_;                                          \
    EXPECT_NE(msg_.find(needle), std::string::npos) << "message: " << msg_;   \
  } while (0)
