#pragma once
// coproc::queue's locked steps: one put or get on the byte ring of frames
// (detail/queue_state.hpp), run with put_lock or get_lock held. Everything
// read from shared memory is checked before it is used as an offset or a
// length. Out-of-line members of queue<T>, included by coproc/ipc/queue.hpp.

#include "coproc/ipc/queue.hpp"

namespace coproc {

// On full, `seen_tail` is the tail that did not leave room: a consumer
// release after it changes tail, which the caller re-checks before sleeping.
template <class T>
auto queue<T>::put_locked(const T& value, std::size_t n, std::uint64_t& seen_tail) -> put_outcome {
  detail::queue_state& s = *s_;
  if (s.closed.load(std::memory_order_acquire) != 0) {
    return put_outcome::closed;
  }
  const std::uint64_t cap = cap_;
  const std::uint64_t head = s.head.load(std::memory_order_relaxed);
  if ((head & 7) != 0) {
    throw_overwritten();  // a frame would start (and its length word end) off the ring
  }
  if (head != last_head_) {
    // Another producer ran since our last put: our view of tail may be
    // arbitrarily old, so it is no longer a safe lower bound.
    cached_tail_ = s.tail.load(std::memory_order_acquire);
  }
  const std::uint64_t need = detail::queue_frame_overhead + detail::align8(n);
  std::uint64_t pos = detail::cursor_offset(head, cap);
  const std::uint64_t to_end = cap - pos;
  const std::uint64_t total = need <= to_end ? need : to_end + need;
  auto fits = [&] {
    return detail::cursor_bytes(cached_tail_, head) + total <= cap &&
           detail::cursor_items(cached_tail_, head) < s.max_items;
  };
  if (!fits()) {
    cached_tail_ = s.tail.load(std::memory_order_acquire);
    if (!fits()) {
      if (!cursors_sane(cached_tail_, head)) {
        throw_overwritten();  // else the queue would stay "full" forever
      }
      last_head_ = head;
      seen_tail = cached_tail_;
      return put_outcome::full;
    }
  }
  if (need > to_end) {
    write_len(pos, detail::queue_wrap_marker);
    pos = 0;
  }
  // Encoding may throw: nothing is published then.
  encode(std::span<std::byte>(data_ + pos + detail::queue_frame_overhead, n), value);
  write_len(pos, n);
  const std::uint64_t next = detail::cursor_advance(head, total, 1);
  s.head.store(next, std::memory_order_release);  // the commit
  last_head_ = next;
  s.producer_cpu.store(detail::current_cpu(), std::memory_order_relaxed);
  return put_outcome::done;
}

// `drop_bad`: an item that fails to decode is released (and the error
// thrown); false leaves it in place (a batch returns what it has first).
template <class T>
auto queue<T>::get_locked(std::optional<T>& out, bool drop_bad) -> get_outcome {
  detail::queue_state& s = *s_;
  const std::uint64_t cap = cap_;
  std::uint64_t tail = s.tail.load(std::memory_order_relaxed);
  if (tail != last_tail_) {
    cached_head_ = s.head.load(std::memory_order_acquire);
  }
  if (cached_head_ == tail) {
    cached_head_ = s.head.load(std::memory_order_acquire);
    if (cached_head_ == tail) {
      last_tail_ = tail;
      if (s.closed.load(std::memory_order_acquire) == 0) {
        return get_outcome::empty;
      }
      // A put published before close() is still drained.
      cached_head_ = s.head.load(std::memory_order_acquire);
      return cached_head_ == tail ? get_outcome::closed : get_locked(out);
    }
  }
  // Every byte here may have been written by another process, which may
  // be broken or hostile: the frame (and a wrap before it) must lie inside
  // the ring and inside the published bytes, else the queue is lost
  // (frame_corrupt, nothing released) - never a read outside the ring, nor
  // a tail moved past head.
  if (!cursors_sane(tail, cached_head_) || detail::cursor_items(tail, cached_head_) == 0) {
    throw_overwritten();
  }
  const std::uint64_t avail = detail::cursor_bytes(tail, cached_head_);
  std::uint64_t pos = detail::cursor_offset(tail, cap);
  std::uint64_t len = read_len(pos);
  std::uint64_t skip = 0;
  if (len == detail::queue_wrap_marker) {
    skip = cap - pos;  // a producer never writes a wrap marker at 0
    if (pos == 0 || skip + detail::queue_frame_overhead > avail) {
      throw_overwritten();
    }
    pos = 0;
    len = read_len(0);
  }
  if (len > max_item_bytes() || skip + detail::queue_frame_overhead + detail::align8(len) > avail ||
      pos + detail::queue_frame_overhead + detail::align8(len) > cap) {
    throw_overwritten();
  }
  if (skip != 0) {
    tail = detail::cursor_advance(tail, skip, 0);
    s.tail.store(tail, std::memory_order_release);
  }
  last_tail_ = tail;
  const std::uint64_t next =
      detail::cursor_advance(tail, detail::queue_frame_overhead + detail::align8(len), 1);
  auto release = [&] {
    s.tail.store(next, std::memory_order_release);  // the release of the item
    last_tail_ = next;
    s.consumer_cpu.store(detail::current_cpu(), std::memory_order_relaxed);
  };
  try {
    out.emplace(decode_from<T>(std::span<const std::byte>(
        data_ + pos + detail::queue_frame_overhead, static_cast<std::size_t>(len))));
  } catch (...) {
    if (drop_bad) {
      release();  // an item that cannot decode would fail every consumer
    }
    throw;
  }
  release();
  return get_outcome::done;
}

// Up to `max` items into `out` (appended); `done` when at least one was taken.
template <class T>
auto queue<T>::get_many_locked(std::vector<T>& out, std::size_t max) -> get_outcome {
  std::optional<T> one;
  get_outcome r = get_locked(one);
  if (r != get_outcome::done) {
    return r;
  }
  out.push_back(std::move(*one));
  std::uint64_t rung_at = s_->tail.load(std::memory_order_relaxed);
  while (out.size() < max) {
    // A producer waiting for room should not wait for the whole batch, nor
    // be woken for every item (it would sleep again at once): ring once a
    // quarter of the ring is free again.
    const std::uint64_t tail = s_->tail.load(std::memory_order_relaxed);
    if (detail::cursor_bytes(rung_at, tail) >= cap_ / 4) {
      ring_not_full();
      rung_at = tail;
    }
    one.reset();
    try {
      if (get_locked(one, false) != get_outcome::done) {
        break;
      }
    } catch (...) {
      break;  // the bad item stays first in line for the next call
    }
    out.push_back(std::move(*one));
  }
  return get_outcome::done;
}

}  // namespace coproc
