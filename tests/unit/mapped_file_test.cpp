// MappedFile::open_padded: the bytes are the file's (written here, read back through the
// mapping), and the promised padding after the end is readable and zero, for sizes around page
// boundaries (the padding lies in the file's last page, or needs anonymous pages after it).
#include "util/mapped_file.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "core/error.hpp"

namespace kiln {
namespace {

TEST(MappedFile, OpenPaddedGivesTheFileThenZeroPadding) {
  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const std::filesystem::path path = std::filesystem::temp_directory_path() /
                                     ("kiln_mapped_file_test_" + std::to_string(::getpid()));
  std::mt19937 rng(3);
  for (const size_t size : {size_t{0}, size_t{1}, page - 64, page - 63, page - 1, page, page + 1,
                            3 * page - 10, 3 * page}) {
    for (const size_t padding : {size_t{0}, size_t{64}, page + 5}) {
      std::string content(size, '\0');
      for (char& c : content) c = static_cast<char>(1 + rng() % 255);  // no zero bytes
      {
        std::ofstream out(path, std::ios::binary);
        out.write(content.data(), static_cast<std::streamsize>(content.size()));
      }
      const auto file = MappedFile::open_padded(path, padding);
      ASSERT_EQ(file->size(), size);
      if (size + padding == 0) continue;
      ASSERT_NE(file->data(), nullptr);
      ASSERT_EQ(std::string(reinterpret_cast<const char*>(file->data()), size), content)
          << size << " + " << padding;
      for (size_t i = 0; i < padding; ++i) {
        ASSERT_EQ(file->data()[size + i], 0) << size << " + " << padding << ", byte " << i;
      }
    }
  }
  std::filesystem::remove(path);
}

TEST(MappedFile, OpenPaddedReportsAMissingFile) {
  try {
    MappedFile::open_padded("/nonexistent/kiln/tokenizer.json", 64);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), KILN_ERR_NOT_FOUND);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/kiln/tokenizer.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace kiln
