#include "coproc/ipc/detail/receive_buffer.hpp"

#include <sys/mman.h>

#include <cstring>
#include <new>

namespace coproc::detail {

namespace {

// A private anonymous mapping of n bytes, advised for transparent huge pages
// as a whole: advising only its 2 MiB-aligned interior would split it into
// several areas, and mremap refuses (EFAULT) a range that spans more than one.
void* map_bytes(std::size_t n) {
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    throw std::bad_alloc();
  }
  ::madvise(p, n, MADV_HUGEPAGE);  // a hint: a failure only costs page faults
  return p;
}

}  // namespace

void receive_buffer::make_room(std::size_t capacity, std::size_t from, std::size_t count) {
  auto compact = [&] {
    if (from > 0 && count > 0) {
      std::memmove(data_, data_ + from, count);
    }
    from = 0;
  };
  if (capacity <= capacity_) {
    compact();
    return;
  }
  if (on_grow != nullptr) {
    on_grow(capacity);
  }
  if (mapped_) {
    // MREMAP_MAYMOVE: the kernel moves the pages to a larger range when the
    // one after ours is taken; nothing is copied either way, and the grown
    // area keeps the huge-page advice.
    compact();
    void* p = ::mremap(data_, capacity_, capacity, MREMAP_MAYMOVE);
    if (p != MAP_FAILED) {
      data_ = static_cast<std::byte*>(p);
      capacity_ = capacity;
      return;
    }
    // Should mremap refuse, a new mapping and one copy still do.
  }
  // A new block: one copy moves the kept bytes to its front.
  const bool map = capacity >= mapped_from;
  auto* bigger = static_cast<std::byte*>(map ? map_bytes(capacity) : ::operator new(capacity));
  if (count > 0) {
    std::memcpy(bigger, data_ + from, count);
  }
  reset();
  data_ = bigger;
  capacity_ = capacity;
  mapped_ = map;
}

void receive_buffer::reset() noexcept {
  if (data_ != nullptr) {
    if (mapped_) {
      ::munmap(data_, capacity_);
    } else {
      ::operator delete(data_);
    }
  }
  data_ = nullptr;
  capacity_ = 0;
  mapped_ = false;
}

}  // namespace coproc::detail
