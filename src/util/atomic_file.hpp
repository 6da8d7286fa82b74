// write_file_atomically: readers of `path` see either the old file or the complete new one,
// never a partial write (temporary file in the same directory, fsync, rename).
#pragma once

#include <filesystem>
#include <string_view>

namespace kiln {

// Throws KILN_ERR_NOT_FOUND when the directory does not exist and KILN_ERR_IO for any other
// failure, naming the path and the OS reason; the temporary file is removed on failure.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

}  // namespace kiln
