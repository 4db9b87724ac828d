#include <fcntl.h>
#include <unistd.h>

#include "coproc/runtime/detail/system_error.hpp"
#include "coproc/runtime/pipe_reader.hpp"

namespace coproc {

std::pair<unique_fd, unique_fd> make_pipe() {
  int fds[2];
  detail::check_syscall(::pipe2(fds, O_CLOEXEC), "pipe2");
  return {unique_fd(fds[0]), unique_fd(fds[1])};
}

}  // namespace coproc
