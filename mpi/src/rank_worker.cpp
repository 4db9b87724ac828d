// The worker ranks: every rank but 0 runs this loop on its MPI thread. It
// attaches to rank 0's session once the build ids agree, runs each task's
// thunk (code offsets resolved through detail/code_identity.hpp) and sends
// the result back.

#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "coproc/executors/detail/callable.hpp"
#include "coproc/executors/detail/code_identity.hpp"
#include "coproc/ipc/remote_error.hpp"
#include "coproc/runtime/errc.hpp"
#include "mpi_wire.hpp"

namespace coproc::detail {
namespace {

class rank_result final : public result_writer {
 public:
  std::span<std::byte> reserve(std::size_t n) override {
    if (n > limit) {
      throw std::system_error(coproc::errc::payload_too_large,
                              "mpi_pool: result of " + std::to_string(n) + " bytes");
    }
    buf.resize(sizeof(result_wire) + n);
    return {buf.data() + sizeof(result_wire), n};
  }
  void commit(std::size_t n) override { buf.resize(sizeof(result_wire) + n); }

  std::vector<std::byte> buf;
  std::size_t limit = message_limit;
};

}  // namespace

int rank_worker_loop() {
  std::vector<std::byte> in;
  rank_result out;
  bool attached = false;
  std::string refusal = "mpi_pool: this rank runs another build";
  backoff idle;
  for (;;) {
    MPI_Status st;
    int flag = 0;
    if (MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st) != MPI_SUCCESS) {
      return 2;
    }
    if (flag == 0) {
      sleep_for(idle.next_sleep());
      continue;
    }
    idle.reset();
    int n = 0;
    MPI_Get_count(&st, MPI_BYTE, &n);
    in.resize(static_cast<std::size_t>(n));
    if (MPI_Recv(in.data(), n, MPI_BYTE, 0, st.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE) !=
        MPI_SUCCESS) {
      return 2;
    }
    switch (st.MPI_TAG) {
      case tag_stop:
        return 0;
      case tag_bye:
        attached = false;
        break;
      case tag_hello: {
        hello_wire h{};
        std::string theirs;
        if (in.size() >= sizeof h) {
          std::memcpy(&h, in.data(), sizeof h);
          theirs.assign(reinterpret_cast<const char*>(in.data()) + sizeof h, in.size() - sizeof h);
        }
        attached = theirs == build_id_text() && h.anchor_offset == own_image().id.anchor_offset &&
                   in_main_program(reinterpret_cast<const void*>(&image_anchor));
        // Offsets from rank 0 resolve only into this executable's code.
        allowed_code() = own_image().code;
        refusal = "mpi_pool: this rank runs another build";
        out.limit = std::min<std::uint64_t>(h.max_result, message_limit);
        ack_wire a{attached ? ack_ok : ack_refused, static_cast<std::int32_t>(::getpid())};
        std::string text = build_id_text();
        if (attached && h.has_initializer != 0) {
          // pool_options::initializer, once per rank and pool, on this (the MPI) thread.
          try {
            const void* code = checked_code_address(h.initializer);
            reinterpret_cast<void (*)()>(const_cast<void*>(code))();
          } catch (const std::exception& e) {
            text = e.what();
            a.ok = ack_init_failed;
          } catch (...) {
            text = "an exception not derived from std::exception";
            a.ok = ack_init_failed;
          }
          if (a.ok == ack_init_failed) {
            attached = false;
            refusal = "mpi_pool: the initializer failed on this rank";
          }
        }
        auto m = message(&a, sizeof a, text);
        if (MPI_Send(m.data(), static_cast<int>(m.size()), MPI_BYTE, 0, tag_ack, MPI_COMM_WORLD) !=
            MPI_SUCCESS) {
          return 2;
        }
        break;
      }
      case tag_task: {
        result_wire r{0, status_value, 0};
        try {
          if (in.size() < sizeof(task_wire)) {
            throw std::system_error(coproc::errc::frame_corrupt, "mpi_pool: short task message");
          }
          task_wire t;
          std::memcpy(&t, in.data(), sizeof t);
          r.id = t.id;
          if (!attached) {
            throw std::system_error(coproc::errc::function_mismatch, refusal);
          }
          auto thunk = reinterpret_cast<thunk_fn>(const_cast<void*>(checked_code_address(t.thunk)));
          thunk(std::span<const std::byte>(in).subspan(sizeof t), out);
        } catch (...) {
          r.status = status_exception;
          try {
            out.write_value(coproc::capture_current_exception());
          } catch (...) {
            out.buf.resize(sizeof r);  // an empty body: the receiver reports frame_corrupt
          }
        }
        std::memcpy(out.buf.data(), &r, sizeof r);
        if (MPI_Send(out.buf.data(), static_cast<int>(out.buf.size()), MPI_BYTE, 0, tag_result,
                     MPI_COMM_WORLD) != MPI_SUCCESS) {
          return 2;
        }
        if (out.buf.capacity() > (std::size_t{64} << 20)) {
          out.buf = {};  // do not keep a huge result buffer for ever
        }
        break;
      }
      default:
        break;
    }
  }
}

}  // namespace coproc::detail
