#pragma once
// slot_channel: one worker slot's protocol, both ends in one place (as
// Seastar's smp_message_queue keeps submit, process and respond together).
//
//   parent                                  worker
//   send(): task frame (+ input arena) --->  next_task(), take(), task_body()
//   receive(): result frame (+ output      <---  reserve_result(), commit_result()
//              arena), frees the output arena         (waits for the output arena)
//   withdraw(): task frame state queued -> cancelled  (take() then skips it)
//
// The slot's memory: [slot_shared][task ring][result ring][input arena]
// [output arena]. Only trivially copyable words and offsets live there, and
// nothing either end reads from it is trusted: sizes are checked against the
// slot's geometry (this process's copy), and a word no peer following the
// protocol could write ends the peer (see shm_ring::corrupt).
//
// The arenas each hold one body at a time. Input arena (parent's end only):
// busy from send() until the task leaves the parent's books; a withdrawn
// frame keeps it busy ("skipped") until the worker's consumed count passed
// the frame. So a task whose arguments came through the input arena owns it
// until its result is read: the worker writes that task's large result back
// into it (result_in_input_arena), over the arguments it decoded already,
// and one set of shared pages carries the payload both ways. Output arena:
// every other large result; busy from the worker's reserve_result() until the
// parent popped the result frame that names it (the worker checks that
// through the result ring's tail; the busy word is only its futex).

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <new>
#include <span>
#include <string>
#include <system_error>

#include "coproc/executors/detail/slot_frames.hpp"
#include "coproc/executors/detail/values_frame.hpp"
#include "coproc/ipc/shm_ring.hpp"
#include "coproc/runtime/detail/futex.hpp"
#include "coproc/runtime/errc.hpp"

namespace coproc::detail {

class slot_channel {
 public:
  static constexpr std::size_t page = 4096;
  static constexpr std::size_t round(std::size_t n) { return (n + page - 1) / page * page; }
  /// Bytes of one slot with rings of `ring_bytes` and arenas of `arena_bytes`.
  static constexpr std::size_t bytes(std::size_t ring_bytes, std::size_t arena_bytes) {
    return round(sizeof(slot_shared)) + 2 * ring_bytes + 2 * round(arena_bytes);
  }

  slot_channel() = default;
  /// A view of the slot at `base` (pointers computed in this process); the
  /// parent end's own state starts afresh.
  slot_channel(std::byte* base, std::size_t ring_bytes, std::size_t arena_bytes) {
    shared = reinterpret_cast<slot_shared*>(base);
    std::byte* p = base + round(sizeof(slot_shared));
    // The capacity from the geometry, never from the header: a worker can
    // write the header's words.
    tasks = shm_ring(&shared->tasks, p, ring_bytes);
    results = shm_ring(&shared->results, p + ring_bytes, ring_bytes);
    in_arena = p + 2 * ring_bytes;
    out_arena = in_arena + round(arena_bytes);
    arena_bytes_ = arena_bytes;
  }

  /// Makes a slot ready for a new worker (parent only, while no worker uses it).
  static void reset(std::byte* base, std::size_t ring_bytes) {
    auto* s = new (base) slot_shared;  // words are trivially constructible
    shm_ring::init(&s->tasks, ring_bytes);
    shm_ring::init(&s->results, ring_bytes);
    s->consumed.store(0, std::memory_order_relaxed);
    s->running_id.store(0, std::memory_order_relaxed);
    s->started_ns.store(0, std::memory_order_relaxed);
    s->worker_cpu.store(-1, std::memory_order_relaxed);
    s->retiring.store(0, std::memory_order_relaxed);
    s->ready.store(0, std::memory_order_relaxed);
    s->stop_id.store(0, std::memory_order_relaxed);
    s->emit_grant.store(0, std::memory_order_relaxed);
    s->emit_bell.store(0, std::memory_order_relaxed);
    s->out_arena_busy.store(0, std::memory_order_release);
  }

  std::size_t arena_bytes() const { return arena_bytes_; }

  // ---- parent end: task frames out ---------------------------------------

  /// Whether a body of `size` bytes goes through the input arena rather
  /// than inline in its frame.
  bool needs_arena(std::size_t size) const {
    return sizeof(task_header) + size > inline_limit(tasks);
  }

  /// Whether the input arena can take a body now.
  bool input_arena_free() {
    if (arena_ == arena_state::skipped &&
        shared->consumed.load(std::memory_order_acquire) > arena_seq_) {
      arena_ = arena_state::free;  // the worker passed the withdrawn frame
    }
    return arena_ == arena_state::free;
  }

  /// A task frame as sent: what the parent keeps to withdraw it.
  struct sent_frame {
    std::atomic<std::uint32_t>* state = nullptr;  // null: not sent
    std::uint64_t seq = 0;                        // its index among the slot's frames
  };

  /// Writes a task frame, its body filled by `encode(span)` (in the input
  /// arena when `arena`, which must be free). Returns a frame without state
  /// when the ring is full (or corrupt: see tasks_corrupt()). If `encode`
  /// throws, nothing was sent.
  template <class Encode>
  sent_frame send(std::uint64_t id, std::int64_t thunk, std::size_t size, bool arena,
                  Encode&& encode) {
    std::size_t frame_size = arena ? sizeof(task_header) : sizeof(task_header) + size;
    std::span<std::byte> frame = tasks.try_reserve(frame_size);
    if (frame.data() == nullptr) {
      return {};
    }
    if (arena) {
      populate_input(size);
    }
    encode(arena ? std::span<std::byte>(in_arena, size) : frame.subspan(sizeof(task_header)));
    auto* h = new (frame.data()) task_header;
    h->id = id;
    h->thunk = thunk;
    h->state.store(task_queued, std::memory_order_relaxed);
    h->in_arena = arena ? 1 : 0;
    h->body_size = size;
    sent_frame out{&h->state, sent_++};
    if (arena) {
      arena_ = arena_state::busy;
      arena_seq_ = out.seq;
      arena_id_ = id;
    }
    tasks.commit(frame_size);
    return out;
  }

  /// Wakes the worker if it sleeps: once per batch of send()s.
  void notify_worker() { tasks.notify(); }
  /// The task ring holds what no parent writes (either end may ask).
  bool tasks_corrupt() const { return tasks.corrupt() || short_task_frame_; }

  /// Withdraws a frame the worker has not taken (it skips it then); false
  /// when the worker took it already. A withdrawn arena body keeps the
  /// arena until the worker passed its frame.
  bool withdraw(const sent_frame& f) {
    std::uint32_t queued = task_queued;
    if (shared->consumed.load(std::memory_order_acquire) > f.seq ||
        !f.state->compare_exchange_strong(queued, task_cancelled, std::memory_order_acq_rel)) {
      return false;
    }
    if (arena_ == arena_state::busy && arena_seq_ == f.seq) {
      arena_ = arena_state::skipped;
    }
    return true;
  }

  /// The task of frame `seq` left the parent's books (finished, failed,
  /// its worker killed): the input arena is free if its body held it.
  void release(std::uint64_t seq) {
    if (arena_ == arena_state::busy && arena_seq_ == seq) {
      arena_ = arena_state::free;
    }
  }

  // ---- parent end: result frames in --------------------------------------

  /// Whether a result frame waits (a corrupt ring reads as empty).
  bool results_ready() const { return !results.empty() && !results.corrupt(); }

  /// Takes every published result frame: `on_result(header, body, valid)`
  /// for each (`valid`: the body lies within its frame or the arena; if not,
  /// `body` is empty), `on_corrupt()` for what no worker writes (a frame
  /// shorter than its header, a corrupt ring). Frees the output arena after
  /// a frame that used it, and wakes a worker waiting for ring space.
  template <class OnResult, class OnCorrupt>
  void receive(OnResult&& on_result, OnCorrupt&& on_corrupt) {
    bool popped = false;
    for (;;) {
      std::span<std::byte> frame = results.try_peek();
      if (frame.data() == nullptr) {
        break;
      }
      if (frame.size() < sizeof(result_header)) {
        results.pop();
        popped = true;
        on_corrupt();
        continue;
      }
      result_header h;
      std::memcpy(&h, frame.data(), sizeof h);
      if (h.status == result_emitted) {
        auto got = values_frame::read(frame.subspan(sizeof h), values_taken_,
                                      [&](std::span<const std::byte> v) { on_result(h, v, true); });
        if (got == values_frame::read_result::open) {
          break;  // the worker appends to it: the next drain reads on
        }
        if (got == values_frame::read_result::corrupt) {
          on_corrupt();
        }
        values_taken_ = 0;
        results.pop();
        popped = true;
        continue;
      }
      std::span<const std::byte> body = result_body(h, frame);
      bool valid = body.data() != nullptr;
      on_result(h, body, valid);
      results.pop();
      popped = true;
      if (h.place == result_in_output_arena) {
        shared->out_arena_busy.store(0, std::memory_order_release);
        futex_wake(shared->out_arena_busy);
      }
    }
    if (results.corrupt()) {
      on_corrupt();
    }
    if (popped) {
      results.notify_producer();
    }
  }

  /// The arena memory past the first `keep` bytes that bodies used since the
  /// last call (input arena, then output arena; empty spans when none), to
  /// give back to the kernel while the slot is idle. Forgets it: the next
  /// call names only what is used after this one.
  std::array<std::span<std::byte>, 2> take_spare(std::size_t keep) {
    auto spare = [keep](std::byte* arena, std::size_t& touched) {
      std::span<std::byte> s;
      if (touched > keep) {
        s = std::span<std::byte>(arena + keep, round(touched) - keep);
      }
      touched = 0;
      return s;
    };
    in_populated_ = std::min(in_populated_, keep);
    return {spare(in_arena, in_touched_), spare(out_arena, out_touched_)};
  }

  // ---- worker end: task frames in ----------------------------------------

  /// The next task frame, or an empty span (see tasks_corrupt()). A frame
  /// shorter than its header is corrupt: its header would be read, and its
  /// state word swapped, past the frame (found by slot_channel_fuzz).
  std::span<std::byte> next_task() {
    std::span<std::byte> frame = short_task_frame_ ? std::span<std::byte>() : tasks.try_peek();
    if (frame.data() != nullptr && frame.size() < sizeof(task_header)) {
      short_task_frame_ = true;
      return {};
    }
    return frame;
  }

  /// Sleeps until a task frame is published: spins `spin` rounds first; false
  /// when `timeout` (if any) passed.
  bool wait_for_task(int spin, const timespec* timeout) {
    return tasks.wait_not_empty(spin, timeout);
  }

  /// Takes the frame's task unless the parent withdrew it (then the frame is
  /// popped, and false). A taken task is announced as running.
  bool take(std::span<std::byte> frame) {
    auto* task = reinterpret_cast<task_header*>(frame.data());
    std::uint32_t expected = task_queued;
    bool mine =
        task->state.compare_exchange_strong(expected, task_taken, std::memory_order_acq_rel);
    if (mine) {
      shared->running_id.store(task->id, std::memory_order_relaxed);
      shared->started_ns.store(monotonic_ns(), std::memory_order_relaxed);
      taken_in_arena_ = task->in_arena != 0;
    }
    shared->consumed.fetch_add(1, std::memory_order_release);
    if (!mine) {
      tasks.pop();
    }
    return mine;
  }

  /// The body of a taken frame; throws frame_corrupt when its size does not fit.
  std::span<const std::byte> task_body(std::span<std::byte> frame) const {
    const auto& task = *reinterpret_cast<const task_header*>(frame.data());
    if (task.in_arena != 0) {
      if (task.body_size > arena_bytes_) {
        throw std::system_error(coproc::errc::frame_corrupt, "task body larger than the arena");
      }
      return {in_arena, task.body_size};
    }
    if (task.body_size > frame.size() - sizeof(task_header)) {
      throw std::system_error(coproc::errc::frame_corrupt, "task body larger than its frame");
    }
    return frame.subspan(sizeof(task_header), task.body_size);
  }

  /// The taken task's result was committed: its frame goes.
  void task_done() {
    tasks.pop();
    shared->running_id.store(0, std::memory_order_relaxed);
    taken_in_arena_ = false;
  }

  // ---- worker end: result frames out -------------------------------------

  /// Space for a result body of `n` bytes: inline in a frame; in the input
  /// arena when the taken task's arguments came through it (it is that
  /// task's until the parent read its result, and the arguments were decoded
  /// before the task ran); else in the output arena once the parent took the
  /// arena's last result. Waits while the ring or the output arena is full,
  /// in sleeps of at most `recheck`; returns an empty span when `give_up()`
  /// says so or the ring turned out corrupt (results_corrupt()). Throws
  /// payload_too_large past the arena.
  template <class GiveUp>
  std::span<std::byte> reserve_result(std::size_t n, const timespec& recheck, GiveUp give_up) {
    if (sizeof(result_header) + n <= inline_limit(results)) {
      std::span<std::byte> frame =
          results.reserve_wait(sizeof(result_header) + n, recheck, give_up);
      out_place_ = result_inline;
      out_frame_ = frame.data();
      return frame.data() == nullptr ? frame : frame.subspan(sizeof(result_header), n);
    }
    if (n > arena_bytes_) {
      throw std::system_error(coproc::errc::payload_too_large,
                              "result of " + std::to_string(n) + " bytes");
    }
    if (taken_in_arena_) {
      out_place_ = result_in_input_arena;
      return {in_arena, n};
    }
    auto& busy = shared->out_arena_busy;
    for (;;) {
      std::uint32_t seen = busy.load(std::memory_order_acquire);
      if (results.released_through(arena_frame_end_)) {
        break;
      }
      if (results.corrupt() || give_up()) {
        return {};
      }
      futex_wait(busy, seen, &recheck);
    }
    busy.store(1, std::memory_order_relaxed);
    out_place_ = result_in_output_arena;
    return {out_arena, n};
  }

  /// Gives back what the last reserve_result() took when its result was
  /// never committed (the encoding threw half-way).
  void abandon_result() {
    if (out_place_ == result_in_output_arena) {
      shared->out_arena_busy.store(0, std::memory_order_release);
    }
    out_place_ = result_inline;
  }

  /// Publishes the reserved result of `n` bytes as task `id`'s; false when
  /// the frame of an arena result found no room (see reserve_result).
  template <class GiveUp>
  bool commit_result(std::uint64_t id, std::uint32_t status, std::size_t n, const timespec& recheck,
                     GiveUp give_up) {
    const bool in_frame = out_place_ == result_inline;
    if (!in_frame) {
      out_frame_ = results.reserve_wait(sizeof(result_header), recheck, give_up).data();
      if (out_frame_ == nullptr) {
        return false;
      }
    }
    std::int64_t run_ns = monotonic_ns() - shared->started_ns.load(std::memory_order_relaxed);
    result_header h{id, status, out_place_, n, run_ns};
    std::memcpy(out_frame_, &h, sizeof h);
    results.commit(in_frame ? sizeof h + n : sizeof h);
    if (out_place_ == result_in_output_arena) {
      arena_frame_end_ = results.published();
    }
    out_place_ = result_inline;
    return true;
  }

  bool results_corrupt() const { return results.corrupt(); }

  /// Largest body sent inline in a frame of `ring`; larger ones use the arena.
  static std::size_t inline_limit(const shm_ring& ring) {
    std::size_t cap = ring.max_frame() - sizeof(task_header);
    return cap < 64 * 1024 ? cap : 64 * 1024;
  }

  // The slot's memory, for the lifecycle words (running_id, ready, ...) and
  // for tests that play a rogue worker.
  slot_shared* shared = nullptr;
  shm_ring tasks;
  shm_ring results;
  std::byte* in_arena = nullptr;
  std::byte* out_arena = nullptr;

 private:
  enum class arena_state { free, busy, skipped };

  /// The body a result frame names; null when no worker following the
  /// protocol wrote it (past its frame or an arena, or in an input arena
  /// that this task's arguments do not hold).
  std::span<const std::byte> result_body(const result_header& h, std::span<std::byte> frame) {
    switch (h.place) {
      case result_inline:
        if (h.body_size <= frame.size() - sizeof h) {
          return frame.subspan(sizeof h, h.body_size);
        }
        return {};
      case result_in_output_arena:
        if (h.body_size <= arena_bytes_) {
          out_touched_ = std::max(out_touched_, static_cast<std::size_t>(h.body_size));
          return {out_arena, h.body_size};
        }
        return {};
      case result_in_input_arena:
        if (h.body_size <= arena_bytes_ && arena_ == arena_state::busy && arena_id_ == h.id) {
          in_touched_ = std::max(in_touched_, static_cast<std::size_t>(h.body_size));
          return {in_arena, h.body_size};
        }
        return {};
      default:
        return {};
    }
  }

  /// Maps the input arena's first `size` bytes here before a body is copied
  /// there: pages past what earlier bodies mapped (or given back since) are
  /// faulted in by one MADV_POPULATE_WRITE, not one 4 KiB fault at a time.
  void populate_input(std::size_t size) {
    in_touched_ = std::max(in_touched_, size);  // given back at rest, even if the encoding throws
    const std::size_t end = round(size);
    if (end > in_populated_) {
      ::madvise(in_arena + in_populated_, end - in_populated_, MADV_POPULATE_WRITE);
      in_populated_ = end;
    }
  }

  std::size_t arena_bytes_ = 0;
  // Parent end.
  std::uint64_t sent_ = 0;  // task frames sent to this worker
  arena_state arena_ = arena_state::free;
  std::uint64_t arena_seq_ = 0;  // the frame whose body holds the input arena
  std::uint64_t arena_id_ = 0;   // and its task's id
  std::size_t in_touched_ = 0;   // the largest bodies in each arena since take_spare()
  std::size_t out_touched_ = 0;
  std::size_t in_populated_ = 0;  // input arena bytes mapped in this process (populate_input)
  std::size_t values_taken_ = 0;  // record bytes read of the values frame at the front
  // Worker end.
  bool short_task_frame_ = false;
  bool taken_in_arena_ = false;  // the taken task's arguments are in the input arena
  result_place out_place_ = result_inline;
  std::byte* out_frame_ = nullptr;
  std::uint64_t arena_frame_end_ = 0;  // result ring position past the last arena result's frame
};

}  // namespace coproc::detail
