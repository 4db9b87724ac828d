#pragma once
// The one place where SQEs for opcodes newer than liburing 2.3's helpers are
// filled by hand (layout from the kernel 6.7+ uapi <linux/io_uring.h>, the
// same fields liburing 2.5's io_uring_prep_waitid / io_uring_prep_futex_wait
// write), and the type-erased operation record the uring_service tracks.

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

/// One operation in flight on the ring. Its address is the SQE's user_data;
/// the ASYNC_CANCEL aimed at it carries the same address with bit 0 set.
struct uring_op {
  /// Called once, on the io_context's thread, when every CQE for the op has
  /// arrived (invoke = true) or at service shutdown (invoke = false: destroy
  /// the handler without calling it). Deletes the op.
  using complete_fn = void (*)(uring_op* op, bool invoke) noexcept;

  explicit uring_op(complete_fn fn) noexcept : complete(fn) {}

  complete_fn complete;
  int res = 0;                    ///< the op's own CQE result
  unsigned pending = 0;           ///< CQEs still expected (the op's, plus a cancel's)
  bool cancel_requested = false;  ///< an ASYNC_CANCEL was queued for it
  uring_op* prev = nullptr;       ///< in-flight list (owned by the service)
  uring_op* next = nullptr;
};

}  // namespace coproc::detail
