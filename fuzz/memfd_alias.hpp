#pragma once
// A second mapping of a memfd that an object under test created for itself:
// what another process sharing that memory sees and can write. Used by
// fuzz/queue_fuzz.cpp and tests/reliability/queue_corruption_test.cpp to
// play a broken or hostile peer without forking.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace coproc::fuzz {

/// The fd number the next memfd_create of this (single-threaded) process
/// gets: the lowest free one. Call it just before constructing the object.
inline int next_free_fd() {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::perror("coproc fuzz: open /dev/null");
    std::abort();
  }
  ::close(fd);
  return fd;
}

/// Maps `size` bytes of the memfd at `fd` again, after checking that it is
/// the memfd named `name` (the object did create it at that number).
class memfd_alias {
 public:
  memfd_alias(int fd, const char* name, std::size_t size) : size_(size) {
    char link[256] = {};
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
    std::string want = std::string("/memfd:") + name;
    if (n < 0 || std::strncmp(link, want.c_str(), want.size()) != 0) {
      std::fprintf(stderr, "coproc fuzz: fd %d is %s, not %s\n", fd, n < 0 ? "closed" : link,
                   want.c_str());
      std::abort();
    }
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      std::perror("coproc fuzz: mmap");
      std::abort();
    }
    data_ = static_cast<std::byte*>(p);
  }
  memfd_alias(const memfd_alias&) = delete;
  memfd_alias& operator=(const memfd_alias&) = delete;
  ~memfd_alias() { ::munmap(data_, size_); }

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }

 private:
  std::byte* data_ = nullptr;
  std::size_t size_;
};

}  // namespace coproc::fuzz
