#pragma once
// Decoding a whole frame into a value that exists already, so that a
// block-copied container (a std::vector of a block-copied type, a
// std::basic_string) keeps the storage it holds: one copy from the frame into
// memory already faulted in, no allocation. The process pool decodes a task's
// result this way into the storage of an argument of the same type, which is
// dead once the result is back (executors/detail/task_op.hpp).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "coproc/ipc/codec.hpp"

namespace coproc::detail {

/// Whether decode_into() reuses the storage of a T: a container whose
/// elements cross as one block.
template <class T>
inline constexpr bool decodes_into_storage_v = kind_of<T>() == codec_kind::block_vector
                                               || kind_of<T>() == codec_kind::string;

/// decode_from<T>(in), written into `out`. A block-copied container keeps its
/// storage when its capacity holds the elements and would not leave more
/// than the larger of the value's own size and 1 MiB unused (a small result
/// must not keep a large argument's memory alive); otherwise (and for every
/// other type) it gets what decode_from returns.
/// @throws what decode_from throws; `out` then holds an unspecified valid value.
template <class T>
void decode_into(std::span<const std::byte> in, T& out) {
  if constexpr (decodes_into_storage_v<T>) {
    using E = typename T::value_type;
    decoder d(in);
    const auto n = static_cast<std::size_t>(d.read_count(sizeof(E)));
    std::span<const std::byte> bytes = d.take(n * sizeof(E));
    if (d.remaining() != 0) {
      throw_frame_corrupt();
    }
    const std::size_t slack = std::max<std::size_t>(n, (std::size_t{1} << 20) / sizeof(E));
    if (n > out.capacity() || out.capacity() - n > slack) {
      out = make_block<T, E>(bytes, n);  // new storage, advised for huge pages
    } else if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(E) == 0) {
      // Viewing the bytes as E: see make_block.
      const auto* first = reinterpret_cast<const E*>(bytes.data());
      out.assign(first, first + n);
    } else {
      unaligned_iterator<E> first(bytes.data());
      out.assign(first, first + static_cast<std::ptrdiff_t>(n));
    }
  } else {
    out = decode_from<T>(in);
  }
}

}  // namespace coproc::detail
