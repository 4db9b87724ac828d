// no_uring: runs a command where io_uring is refused, the way Docker's and
// containerd's default seccomp profiles refuse it: io_uring_setup,
// io_uring_enter and io_uring_register fail with EPERM, every other system
// call is allowed. The filter is inherited by every process the command
// starts and cannot be lifted, so `no_uring ctest` runs a whole suite there.
// Needs no privilege: PR_SET_NO_NEW_PRIVS first, then PR_SET_SECCOMP.
//
//   no_uring COMMAND [ARGS...]

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>

namespace {

#if defined(__x86_64__)
constexpr unsigned native_arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr unsigned native_arch = AUDIT_ARCH_AARCH64;
#else
#error "no_uring: add this architecture's AUDIT_ARCH_* value"
#endif

constexpr unsigned load_word = BPF_LD | BPF_W | BPF_ABS;
constexpr unsigned jump_if_equal = BPF_JMP | BPF_JEQ | BPF_K;
constexpr unsigned ret = BPF_RET | BPF_K;

int install_filter() {
  sock_filter program[] = {
      // Another architecture's system call numbers mean other calls: allow.
      BPF_STMT(load_word, offsetof(seccomp_data, arch)),
      BPF_JUMP(jump_if_equal, native_arch, 1, 0),
      BPF_STMT(ret, SECCOMP_RET_ALLOW),
      BPF_STMT(load_word, offsetof(seccomp_data, nr)),
      BPF_JUMP(jump_if_equal, __NR_io_uring_setup, 3, 0),
      BPF_JUMP(jump_if_equal, __NR_io_uring_enter, 2, 0),
      BPF_JUMP(jump_if_equal, __NR_io_uring_register, 1, 0),
      BPF_STMT(ret, SECCOMP_RET_ALLOW),
      BPF_STMT(ret, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof program / sizeof program[0]), program};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    std::perror("no_uring: prctl(PR_SET_NO_NEW_PRIVS)");
    return -1;
  }
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
    std::perror("no_uring: prctl(PR_SET_SECCOMP)");
    return -1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: no_uring COMMAND [ARGS...]\n");
    return 2;
  }
  if (install_filter() != 0) {
    return 126;
  }
  ::execvp(argv[1], argv + 1);
  std::fprintf(stderr, "no_uring: exec %s: %s\n", argv[1], std::strerror(errno));
  return 127;
}
