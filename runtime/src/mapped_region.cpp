#include "coproc/runtime/mapped_region.hpp"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coproc/runtime/detail/system_error.hpp"

namespace coproc {

mapped_region mapped_region::create(std::size_t size, const char* debug_name) {
  unique_fd fd(detail::check_syscall(::memfd_create(debug_name, MFD_CLOEXEC), "memfd_create"));
  // memfds are created 0777: only this user may open it through /proc.
  detail::check_syscall(::fchmod(fd.get(), 0600), "fchmod");
  detail::check_syscall(::ftruncate(fd.get(), static_cast<off_t>(size)), "ftruncate");
  return map(std::move(fd), size);
}

mapped_region mapped_region::map(unique_fd fd, std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (p == MAP_FAILED) {
    detail::throw_errno("mmap");
  }
  return mapped_region(std::move(fd), static_cast<std::byte*>(p), size);
}

mapped_region& mapped_region::operator=(mapped_region&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::move(other.fd_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void mapped_region::discard(std::size_t offset, std::size_t len) noexcept {
  long page = ::sysconf(_SC_PAGESIZE);
  std::size_t begin = (offset + page - 1) / page * page;
  std::size_t end = (offset + len) / page * page;
  if (data_ && end > begin) {
    ::madvise(data_ + begin, end - begin, MADV_REMOVE);
  }
}

void mapped_region::reset() noexcept {
  if (data_) {
    ::munmap(data_, size_);
    data_ = nullptr;
    size_ = 0;
  }
  fd_.reset();
}

}  // namespace coproc
