#pragma once
// The one place where SQEs for opcodes newer than liburing 2.3's helpers are
// filled by hand (layout from the kernel 6.7+ uapi <linux/io_uring.h>, the
// same fields liburing 2.5's io_uring_prep_waitid / io_uring_prep_futex_wait
// write).

#include <liburing.h>
#include <sys/wait.h>

#include <cstdint>

namespace coproc::detail {

/// Opcode numbers from the 6.7 uapi (enum io_uring_op); absent from the 2.3 headers.
inline constexpr std::uint8_t op_waitid = 50;
inline constexpr std::uint8_t op_futex_wait = 51;

/// FUTEX2_SIZE_U32 from <linux/futex.h> (6.7); no FUTEX2_PRIVATE: words live in
/// shared memory and are woken from other processes.
inline constexpr std::uint32_t futex2_size_u32 = 0x02;
inline constexpr std::uint64_t futex_bitset_match_any = 0xffffffffu;

inline void clear_sqe(io_uring_sqe* sqe) noexcept {
  *sqe = io_uring_sqe{};
}

/// IORING_OP_WAITID: fd = id, len = idtype, file_index = options, addr2 = infop,
/// op flags (the rw_flags union member, waitid_flags in 6.7) = 0.
inline void prep_waitid(io_uring_sqe* sqe, idtype_t idtype, id_t id, siginfo_t* infop,
                        int options) noexcept {
  clear_sqe(sqe);
  sqe->opcode = op_waitid;
  sqe->fd = static_cast<std::int32_t>(id);
  sqe->len = static_cast<std::uint32_t>(idtype);
  sqe->file_index = static_cast<std::uint32_t>(options);
  sqe->addr2 = reinterpret_cast<std::uintptr_t>(infop);
}

/// IORING_OP_FUTEX_WAIT: fd = futex2 flags, addr = word, off = expected value,
/// addr3 = bitset mask, op flags (futex_flags in 6.7) = 0.
inline void prep_futex_wait(io_uring_sqe* sqe, const void* word, std::uint64_t expected) noexcept {
  clear_sqe(sqe);
  sqe->opcode = op_futex_wait;
  sqe->fd = static_cast<std::int32_t>(futex2_size_u32);
  sqe->addr = reinterpret_cast<std::uintptr_t>(word);
  sqe->off = expected;
  sqe->addr3 = futex_bitset_match_any;
}

}  // namespace coproc::detail
