#pragma once
/// A bounded multi-producer multi-consumer queue of codable values in shared
/// memory (Python's multiprocessing.Queue), with blocking and Asio async forms.

#include <asio/error.hpp>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "coproc/ipc/codec.hpp"
#include "coproc/ipc/detail/futex_async_loop.hpp"
#include "coproc/ipc/detail/peer_spin.hpp"
#include "coproc/ipc/detail/queue_state.hpp"
#include "coproc/ipc/detail/sync_state.hpp"
#include "coproc/ipc/process_shared.hpp"
#include "coproc/ipc/shm_ring.hpp"
#include "coproc/runtime/errc.hpp"
#include "coproc/runtime/mapped_region.hpp"

namespace coproc {

/// Bounds of a coproc::queue. A put waits while either bound is reached.
struct queue_options {
  /// Items the queue holds at most (1 .. 2^23 - 1).
  std::size_t max_items = 65536;
  /// Bytes of the shared ring (rounded up to a power of two, 4 KiB .. 4 GiB).
  /// Each item takes its encoded size rounded up to 8, plus 8 bytes; one item
  /// may take at most max_item_bytes() = ring / 2 - 8 encoded bytes. The ring
  /// is a sparse memfd: untouched pages cost nothing.
  std::size_t max_bytes = std::size_t{1} << 20;
};

/// A bounded FIFO of `T` values shared by any number of producer and
/// consumer processes (and threads). Items are encoded with coproc's codec
/// (variable size) straight into a ring in an anonymous shared mapping
/// (memfd, never /dev/shm); children forked after construction share it.
///
/// - Blocking forms (`put`, `get`, `try_put_for`, `try_get_for`) are for
///   plain code: workers, children, threads other than an event loop's.
/// - Async forms (`async_put`, `async_get`) are for an event loop: they never
///   block its thread (waits go through coproc::async_futex_wait).
///
/// Closing. close() is final: every waiter (blocked or async, in any process)
/// wakes; puts then fail with coproc::errc::queue_closed; gets still return
/// the items already in the queue and fail with queue_closed once it is empty.
/// A put that races with close() may either succeed or fail.
///
/// Robustness. Nobody holds a lock while sleeping, so a process killed while
/// waiting in get or put loses nothing. Producers and consumers each
/// serialise on a robust futex lock; an item becomes visible through one
/// atomic store after it was fully written, and is released through one
/// atomic store after it was fully decoded. A process killed mid-put (even by
/// SIGKILL) leaves only unpublished bytes behind; one killed mid-get leaves
/// the item in the queue for the next consumer. Either way the next process
/// recovers the lock (the kernel reports the dead owner) and carries on.
///
/// Ordering: FIFO overall (one total order of puts; gets take them in it).
/// Doorbells: a side makes a wake-up system call only when the other side
/// announced that it sleeps (one more, an eventfd write, when an event loop
/// on the epoll backend waits: coproc::futex_doorbell); a blocking side whose peer last ran on
/// another CPU spins briefly (bounded) before it sleeps.
///
/// Does not move or copy (other processes point into its state).
/// Thread safety: every member may be called concurrently from any thread of
/// any process sharing the queue.
template <class T>
class queue {
  static_assert(codable<T>, "coproc::queue<T>: T must be codable (see coproc/ipc/codec.hpp)");

 public:
  using value_type = T;

  /// An empty open queue in its own memfd mapping.
  /// Throws std::invalid_argument for bounds out of range, std::system_error
  /// naming the failing call (memfd_create, ftruncate, mmap).
  explicit queue(queue_options opts = {})
      : region_(
            mapped_region::create(sizeof(detail::queue_state) + ring_bytes(opts), "coproc-queue")),
        s_(::new (region_.data())
               detail::queue_state(ring_bytes(opts), static_cast<std::uint32_t>(opts.max_items))),
        data_(region_.data() + sizeof(detail::queue_state)),
        cap_(ring_bytes(opts)) {}

  queue(const queue&) = delete;
  queue& operator=(const queue&) = delete;

  // ---- producers ----

  /// Appends `value`, blocking while the queue is full.
  /// Throws std::system_error: coproc::errc::queue_closed when the queue is
  /// (or becomes, while waiting) closed; errc::frame_too_large when the item
  /// encodes to more than max_item_bytes(). Whatever encoding throws (a
  /// cereal save()) propagates; nothing is enqueued then.
  /// errc::frame_corrupt when another process overwrote the queue's cursors
  /// (the queue is lost; nothing is written outside the ring).
  void put(const T& value) { put_until(value, nullptr); }

  /// Appends `value` if there is room now; never waits for room.
  /// Returns false when full. Throws as put().
  bool try_put(const T& value) {
    const std::size_t n = checked_size(value);
    std::uint64_t seen = 0;
    return finish_put(put_once(value, n, nullptr, seen)) == put_outcome::done;
  }

  /// Appends `value`, waiting at most `d` for room; false on timeout.
  /// Throws as put().
  template <class Rep, class Period>
  bool try_put_for(const T& value, const std::chrono::duration<Rep, Period>& d) {
    return try_put_until(value, std::chrono::steady_clock::now() + d);
  }

  /// Appends `value`, waiting until `deadline` at most; false on timeout.
  bool try_put_until(const T& value, std::chrono::steady_clock::time_point deadline) {
    return put_until(value, &deadline);
  }

  // ---- consumers ----

  /// Removes and returns the oldest item, blocking while the queue is empty.
  /// Throws std::system_error: coproc::errc::queue_closed when the queue is
  /// closed and empty; errc::frame_corrupt when the item does not decode
  /// (the item is dropped: it would fail for every consumer). Whatever
  /// decoding throws (a cereal load()) propagates after dropping the item.
  /// Also errc::frame_corrupt, with nothing dropped, when another process
  /// overwrote the shared cursors or a length word so that the next item
  /// would lie outside the ring or the published bytes: the queue is lost,
  /// but nothing outside the ring is read and tail never passes head.
  T get() { return *get_until(nullptr); }

  /// Removes up to `max` (>= 1) items at once (FIFO order), blocking only
  /// while the queue is empty. Throws as get(); an item that fails to decode
  /// ends the batch before it and fails the next call.
  std::vector<T> get_some(std::size_t max) {
    return get_until<std::vector<T>>(nullptr, max < 1 ? 1 : max);
  }

  /// The oldest item if there is one now (it may wait for another consumer
  /// to finish copying an item out, never for an item to arrive).
  /// Returns std::nullopt when empty. Throws as get() (queue_closed when
  /// closed and empty).
  std::optional<T> try_get() {
    std::optional<T> out;
    if (get_once(out, nullptr) == get_outcome::closed) {
      throw std::system_error(make_error_code(errc::queue_closed), "coproc::queue::try_get");
    }
    return out;
  }

  /// The oldest item, waiting at most `d`; std::nullopt on timeout. Throws as get().
  template <class Rep, class Period>
  std::optional<T> try_get_for(const std::chrono::duration<Rep, Period>& d) {
    return try_get_until(std::chrono::steady_clock::now() + d);
  }

  /// The oldest item, waiting until `deadline` at most; std::nullopt on timeout.
  std::optional<T> try_get_until(std::chrono::steady_clock::time_point deadline) {
    return get_until(&deadline);
  }

  // ---- event loop ----

  /// Appends a copy of `value` without blocking the calling (loop) thread.
  ///
  /// Completion signature: void(std::error_code): empty once enqueued;
  /// coproc::errc::queue_closed, errc::frame_too_large (or the code of a
  /// std::system_error thrown by encoding; any other exception from a
  /// user's save() is reported as errc::frame_corrupt) when not enqueued;
  /// asio::error::operation_aborted when cancelled (not enqueued).
  /// Runs on the handler's associated executor (the coroutine's for
  /// asio::use_awaitable), which must be an io_context's (coproc's io_uring
  /// service is used there); never completes inside this call.
  /// Cancellation: terminal, partial and total, while waiting for room.
  template <class Token>
  auto async_put(T value, Token&& token) {
    return detail::async_futex_loop(put_machine{this, std::move(value)},
                                    std::forward<Token>(token));
  }

  /// Removes the oldest item without blocking the calling (loop) thread.
  ///
  /// Completion signature: void(std::error_code, T): empty and the item;
  /// coproc::errc::queue_closed when closed and empty; errc::frame_corrupt
  /// when the item does not decode (dropped; a std::system_error thrown by a
  /// user's load() gives its own code); asio::error::operation_aborted when
  /// cancelled (nothing removed). T is value-initialised on error.
  /// Executor and cancellation as async_put.
  template <class Token>
  requires std::default_initializable<T>
  auto async_get(Token&& token) {
    return detail::async_futex_loop(get_machine<std::optional<T>>{this, 1},
                                    std::forward<Token>(token));
  }

  /// Removes up to `max` (>= 1) items at once, waiting only while the queue
  /// is empty: one completion (one trip through the loop) per batch, the
  /// way to drain a busy queue from an event loop.
  ///
  /// Completion signature: void(std::error_code, std::vector<T>): empty and
  /// 1..max items in FIFO order; otherwise as async_get (no items). An item
  /// that fails to decode ends the batch before it and fails the next call.
  /// Executor and cancellation as async_put.
  template <class Token>
  auto async_get_some(std::size_t max, Token&& token) {
    return detail::async_futex_loop(get_machine<std::vector<T>>{this, max < 1 ? 1 : max},
                                    std::forward<Token>(token));
  }

  // ---- state ----

  /// Closes the queue (idempotent) and wakes every waiter, in every process.
  void close() noexcept {
    s_->closed.store(1, std::memory_order_seq_cst);
    detail::bell_force(s_->not_empty, door_, s_->not_empty_listeners);
    detail::bell_force(s_->not_full, door_, s_->not_full_listeners);
  }

  bool closed() const noexcept { return s_->closed.load(std::memory_order_acquire) != 0; }

  /// Items in the queue (a snapshot, as Python's qsize()).
  std::size_t size() const noexcept {
    return detail::cursor_items(s_->tail.load(std::memory_order_acquire),
                                s_->head.load(std::memory_order_acquire));
  }
  bool empty() const noexcept { return size() == 0; }

  std::size_t max_items() const noexcept { return s_->max_items; }
  /// Bytes of the ring (max_bytes rounded up to a power of two).
  std::size_t max_bytes() const noexcept { return cap_; }
  /// The largest encoded item the queue accepts.
  std::size_t max_item_bytes() const noexcept { return cap_ / 2 - detail::queue_frame_overhead; }

 private:
  enum class put_outcome { done, full, closed, timeout };
  enum class get_outcome { done, empty, closed, timeout };
  using time_point = std::chrono::steady_clock::time_point;

  static std::uint64_t ring_bytes(const queue_options& o) {
    if (o.max_items < 1 || o.max_items > detail::queue_max_items) {
      throw std::invalid_argument("coproc::queue: max_items out of range");
    }
    if (o.max_bytes > detail::queue_max_bytes) {
      throw std::invalid_argument("coproc::queue: max_bytes out of range");
    }
    std::uint64_t cap = 4096;
    while (cap < o.max_bytes) {
      cap <<= 1;
    }
    return cap;
  }

  std::size_t checked_size(const T& value) const {
    const std::size_t n = encoded_size(value);
    if (n > max_item_bytes()) {
      throw std::system_error(make_error_code(errc::frame_too_large),
                              "coproc::queue::put: item larger than max_item_bytes()");
    }
    return n;
  }

  // Cursors another process could have overwritten: 8-aligned, head at most
  // one ring ahead of tail.
  bool cursors_sane(std::uint64_t tail, std::uint64_t head) const noexcept {
    return (tail & 7) == 0 && (head & 7) == 0 && detail::cursor_bytes(tail, head) <= cap_;
  }
  [[noreturn]] static void throw_overwritten() {
    throw std::system_error(make_error_code(errc::frame_corrupt),
                            "coproc::queue: shared state overwritten");
  }

  std::uint64_t read_len(std::uint64_t pos) const noexcept {
    std::uint64_t len;
    std::memcpy(&len, data_ + pos, sizeof len);
    return len;
  }
  void write_len(std::uint64_t pos, std::uint64_t len) noexcept {
    std::memcpy(data_ + pos, &len, sizeof len);
  }

  // ---- the locked steps (the caller holds put_lock / get_lock), in
  // detail/queue_steps.hpp ----

  // On full, `seen_tail` is the tail that did not leave room: a consumer
  // release after it changes tail, which the caller re-checks before sleeping.
  put_outcome put_locked(const T& value, std::size_t n, std::uint64_t& seen_tail);
  // `drop_bad`: an item that fails to decode is released (and the error
  // thrown); false leaves it in place (a batch returns what it has first).
  get_outcome get_locked(std::optional<T>& out, bool drop_bad = true);
  // Up to `max` items into `out` (appended); `done` when at least one was taken.
  get_outcome get_many_locked(std::vector<T>& out, std::size_t max);

  // ---- one attempt each: take the lock, step, ring the other side ----

  put_outcome put_once(const T& value, std::size_t n, const time_point* deadline,
                       std::uint64_t& seen_tail) {
    if (detail::lock_acquire(s_->put_lock, deadline) == detail::acquire_result::busy) {
      return put_outcome::timeout;
    }
    detail::lock_hold hold(s_->put_lock);
    return put_locked(value, n, seen_tail);
  }

  put_outcome finish_put(put_outcome r) {
    if (r == put_outcome::done) {
      ring_not_empty();
    } else if (r == put_outcome::closed) {
      throw std::system_error(make_error_code(errc::queue_closed), "coproc::queue::put");
    }
    return r;
  }

  template <class Out>
  get_outcome get_once(Out& out, const time_point* deadline, std::size_t max = 1) {
    if (detail::lock_acquire(s_->get_lock, deadline) == detail::acquire_result::busy) {
      return get_outcome::timeout;
    }
    get_outcome r;
    {
      detail::lock_hold hold(s_->get_lock);
      r = locked_get(out, max);
    }
    if (r == get_outcome::done) {
      ring_not_full();
    }
    return r;
  }

  get_outcome locked_get(std::optional<T>& out, std::size_t) { return get_locked(out); }
  get_outcome locked_get(std::vector<T>& out, std::size_t max) { return get_many_locked(out, max); }

  void ring_not_empty() noexcept {
    detail::bell_ring(s_->not_empty, door_, s_->not_empty_listeners);
  }
  void ring_not_full() noexcept { detail::bell_ring(s_->not_full, door_, s_->not_full_listeners); }

  // Lock-free hints for the spin and the re-check before sleeping.
  bool readable() const noexcept {
    return s_->head.load(std::memory_order_acquire) != s_->tail.load(std::memory_order_acquire) ||
           closed();
  }
  bool writable_hint(std::uint64_t seen_tail) const noexcept {
    return s_->tail.load(std::memory_order_acquire) != seen_tail || closed();
  }

  // Spins (bounded) while `peer_cpu` is another CPU than ours, until ready()
  // (detail/peer_spin.hpp).
  template <class Ready>
  static bool spin(const std::atomic<std::int32_t>& peer_cpu, Ready ready) noexcept {
    return detail::peer_on_other_cpu(peer_cpu.load(std::memory_order_relaxed)) &&
           detail::spin_until(detail::blocking_spin_budget, ready);
  }

  // Sleeps on `bell` (already armed with `v`) until woken or `deadline`.
  // False once the deadline passed.
  static bool sleep(std::atomic<std::uint32_t>& bell, std::uint32_t v,
                    const time_point* deadline) noexcept {
    timespec ts{};
    if (deadline != nullptr && !detail::remaining(*deadline, ts)) {
      return false;
    }
    detail::futex_wait(bell, v, deadline != nullptr ? &ts : nullptr);
    return true;
  }

  bool put_until(const T& value, const time_point* deadline) {
    const std::size_t n = checked_size(value);
    for (;;) {
      std::uint64_t seen = 0;
      put_outcome r = finish_put(put_once(value, n, deadline, seen));
      if (r == put_outcome::done) {
        return true;
      }
      if (r == put_outcome::timeout) {
        return false;
      }
      if (spin(s_->consumer_cpu, [&] { return writable_hint(seen); })) {
        continue;
      }
      const std::uint32_t v = detail::bell_arm(s_->not_full);
      if (writable_hint(seen)) {
        continue;
      }
      if (!sleep(s_->not_full, v, deadline)) {
        return false;
      }
    }
  }

  template <class Out = std::optional<T>>
  Out get_until(const time_point* deadline, std::size_t max = 1) {
    Out out;
    for (;;) {
      switch (get_once(out, deadline, max)) {
        case get_outcome::done:
          return out;
        case get_outcome::closed:
          throw std::system_error(make_error_code(errc::queue_closed), "coproc::queue::get");
        case get_outcome::timeout:
          return Out{};
        case get_outcome::empty:
          break;
      }
      if (spin(s_->producer_cpu, [&] { return readable(); })) {
        continue;
      }
      const std::uint32_t v = detail::bell_arm(s_->not_empty);
      if (readable()) {
        continue;
      }
      if (!sleep(s_->not_empty, v, deadline)) {
        return Out{};
      }
    }
  }

  static std::error_code code_of_current_exception() noexcept {
    try {
      throw;
    } catch (const std::system_error& e) {
      return e.code();
    } catch (...) {
      return make_error_code(errc::frame_corrupt);
    }
  }

  // ---- async machines (detail::futex_loop_op drives them), in
  // detail/queue_machines.hpp ----
  struct machine_base;
  struct put_machine;
  template <class Out>
  struct get_machine;

  mapped_region region_;
  detail::queue_state* s_;
  // Rung beside both bells for loops on the epoll backend; shared by fork as
  // the mapping is.
  futex_doorbell door_;
  std::byte* data_;
  // This process's copy of the ring size: the one in shared memory could be
  // overwritten by another process, and offsets derive from it.
  std::uint64_t cap_;
  // Process-local views, touched only under the matching lock.
  std::uint64_t cached_tail_ = 0;  // producers' last view of tail
  std::uint64_t last_head_ = 0;    // head after this process's last put
  std::uint64_t cached_head_ = 0;  // consumers' last view of head
  std::uint64_t last_tail_ = 0;    // tail after this process's last get
};

/// Handed to a coproc::process child by reference (coproc/ipc/process_shared.hpp).
template <class T>
inline constexpr bool is_process_shared_v<queue<T>> = true;

}  // namespace coproc

// Out-of-line members, after the class: the locked ring steps and the async
// machines.
#include "coproc/ipc/detail/queue_machines.hpp"
#include "coproc/ipc/detail/queue_steps.hpp"
