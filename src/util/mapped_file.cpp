#include "util/mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) fail_errno(path, "cannot open", errno);

  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail_errno(path, "cannot stat", errno);
  if (S_ISDIR(st.st_mode)) fail(KILN_ERR_IO, "cannot read " + path.string() + ": is a directory");
  if (!S_ISREG(st.st_mode)) {
    fail(KILN_ERR_IO, "cannot map " + path.string() + ": not a regular file");
  }

  std::unique_ptr<MappedFile> file(new MappedFile());
  file->size_ = static_cast<size_t>(st.st_size);
  // mmap of length 0 is EINVAL; an empty file is simply an empty view.
  if (file->size_ == 0) return file;

  void* addr = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  if (addr == MAP_FAILED) {
    const int err = errno;
    file->size_ = 0;
    fail(KILN_ERR_IO, "cannot mmap " + path.string() + ": " + std::strerror(err));
  }
  file->data_ = static_cast<const uint8_t*>(addr);
  return file;
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

std::string read_text_file(const std::filesystem::path& path) {
  const auto file = MappedFile::open(path);
  return std::string(reinterpret_cast<const char*>(file->data()), file->size());
}

}  // namespace kiln
