#include "test_support.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

namespace kiln::test {

namespace fs = std::filesystem;

fs::path fixtures_dir() { return fs::path(KILN_FIXTURES_DIR); }
fs::path source_dir() { return fs::path(KILN_SOURCE_DIR); }

namespace {
struct TempRoot {
  fs::path root;
  TempRoot() {
    root = fs::temp_directory_path() / ("kiln-test-" + std::to_string(::getpid()));
    fs::create_directories(root);
  }
  ~TempRoot() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};
TempRoot& temp_root() {
  static TempRoot r;
  return r;
}
}  // namespace

fs::path temp_dir(const std::string& tag) {
  static std::mutex mu;
  static int counter = 0;
  std::lock_guard<std::mutex> lock(mu);
  fs::path p = temp_root().root / (tag + "-" + std::to_string(counter++));
  fs::create_directories(p);
  return p;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::runtime_error("cannot write " + path.string());
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<float> read_f32_file(const fs::path& path) {
  std::string bytes = read_file(path);
  if (bytes.size() % 4 != 0) throw std::runtime_error("not float32 data: " + path.string());
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

double relative_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    num += d * d;
    den += static_cast<double>(b[i]) * static_cast<double>(b[i]);
  }
  if (std::isnan(num)) return INFINITY;
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

fs::path gunzip_fixture(const fs::path& gz_path) {
  static std::mutex mu;
  static std::map<std::string, fs::path> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(gz_path.string());
  if (it != cache.end()) return it->second;
  fs::path out = temp_dir("gunzip") / gz_path.stem();
  std::string cmd = "gzip -dc '" + gz_path.string() + "' > '" + out.string() + "'";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("gunzip failed: " + gz_path.string());
  cache[gz_path.string()] = out;
  return out;
}

}  // namespace kiln::test
