// Helpers shared by the unit tests: fixture paths, reading reference files, error comparisons.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kiln::test {

std::filesystem::path fixtures_dir();          // tests/fixtures
std::filesystem::path source_dir();            // the repo root
// A fresh empty directory under the system temp dir, removed at process exit.
std::filesystem::path temp_dir(const std::string& tag);

std::vector<float> read_f32_file(const std::filesystem::path& path);
std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& bytes);

// ||a - b|| / ||b|| in float64.
double relative_l2(const float* a, const float* b, size_t n);
// Gunzips a .gz fixture into a temp file (cached per process) and returns its path.
std::filesystem::path gunzip_fixture(const std::filesystem::path& gz_path);

}  // namespace kiln::test
