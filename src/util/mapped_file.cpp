#include "util/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.hpp"

namespace kiln {

namespace {

// Closes a descriptor on every path out of MappedFile::open (the mapping outlives it).
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

[[noreturn]] void fail_errno(const std::filesystem::path& path, const char* what, int err) {
  const kiln_status status = (err == ENOENT || err == ENOTDIR) ? KILN_ERR_NOT_FOUND : KILN_ERR_IO;
  fail(status, std::string(what) + " " + path.string() + ": " + std::strerror(err));
}

}  // namespace

std::unique_ptr<MappedFile> MappedFile::open(const std::filesystem::path& path) {
  return map(path, 0, false);
}

std::unique_ptr<MappedFile> MappedFile::open_padded(const std::filesystem::path& path,
                                                    size_t padding) {
  return map(path, padding, true);
}

std::unique_ptr<MappedFile> MappedFile::map(const std::filesystem::path& path, size_t padding,
                                            bool populate) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail_errno(path, "cannot open", errno);

  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail_errno(path, "cannot stat", errno);
  if (S_ISDIR(st.st_mode)) fail(KILN_ERR_IO, "cannot read " + path.string() + ": is a directory");
  if (!S_ISREG(st.st_mode)) {
    fail(KILN_ERR_IO, "cannot map " + path.string() + ": not a regular file");
  }

  std::unique_ptr<MappedFile> file(new MappedFile());
  const auto size = static_cast<size_t>(st.st_size);
  // mmap of length 0 is EINVAL; an empty file without padding is simply an empty view.
  if (size + padding == 0) return file;

  const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t file_pages = (size + page - 1) / page * page;
  const size_t total = (size + padding + page - 1) / page * page;
  // Reading a file mapping past the page holding the file's last byte is SIGBUS, so padding
  // that reaches further is anonymous (zero) memory reserved first, with the file mapped over
  // its start. Within the last file page, the bytes past the end read as zeros.
  void* base = MAP_FAILED;
  if (total > file_pages) {
    base = ::mmap(nullptr, total, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
      fail(KILN_ERR_IO, "cannot map " + path.string() + ": " + std::strerror(errno));
    }
  }
  void* addr = base;
  if (size > 0) {
    const int flags =
        MAP_PRIVATE | (populate ? MAP_POPULATE : 0) | (base != MAP_FAILED ? MAP_FIXED : 0);
    addr = ::mmap(base != MAP_FAILED ? base : nullptr, size, PROT_READ, flags, fd.get(), 0);
    if (addr == MAP_FAILED) {
      const int err = errno;
      if (base != MAP_FAILED) ::munmap(base, total);
      fail(KILN_ERR_IO, "cannot mmap " + path.string() + ": " + std::strerror(err));
    }
  }
  file->data_ = static_cast<const uint8_t*>(addr);
  file->size_ = size;
  file->mapped_ = std::max(total, file_pages);
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), mapped_);
}

std::string read_text_file(const std::filesystem::path& path) {
  const auto file = MappedFile::open(path);
  return std::string(reinterpret_cast<const char*>(file->data()), file->size());
}

}  // namespace kiln
