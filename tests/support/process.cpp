// SPDX-License-Identifier: MIT
// posix_spawn with both output streams captured through pipes and poll.

#include "support/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <system_error>

extern char** environ;

namespace wxa::test {
namespace {

[[noreturn]] void fail(int error, const char* what) {
  throw std::system_error(error, std::generic_category(), what);
}

// Owns a file descriptor; closing errors at destruction cannot be reported
// and do not matter for a pipe end we only read from or never used.
class Fd {
 public:
  explicit Fd(int fd = -1) noexcept : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  [[nodiscard]] int get() const noexcept { return fd_; }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) (void)::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// posix_spawn_file_actions_t with its destroy; every call is checked.
class FileActions {
 public:
  FileActions() {
    if (const int rc = posix_spawn_file_actions_init(&actions_); rc != 0) {
      fail(rc, "posix_spawn_file_actions_init");
    }
  }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;
  ~FileActions() { (void)posix_spawn_file_actions_destroy(&actions_); }
  void dup2(int from, int to) {
    if (const int rc = posix_spawn_file_actions_adddup2(&actions_, from, to);
        rc != 0) {
      fail(rc, "posix_spawn_file_actions_adddup2");
    }
  }
  void open(int fd, const char* path, int flags) {
    if (const int rc =
            posix_spawn_file_actions_addopen(&actions_, fd, path, flags, 0);
        rc != 0) {
      fail(rc, "posix_spawn_file_actions_addopen");
    }
  }
  [[nodiscard]] const posix_spawn_file_actions_t* get() const noexcept {
    return &actions_;
  }

 private:
  posix_spawn_file_actions_t actions_;
};

void make_pipe(Fd& read_end, Fd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail(errno, "pipe2");
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
}

}  // namespace

ProcessResult run_process(const std::vector<std::string>& argv,
                          const std::vector<std::string>& extra_env) {
  if (argv.empty()) fail(EINVAL, "run_process: empty argv");

  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry = *e;
    const std::string_view name = entry.substr(0, entry.find('='));
    bool overridden = false;
    for (const std::string& extra : extra_env) {
      overridden |= extra.substr(0, extra.find('=')) == name;
    }
    if (!overridden) env_strings.emplace_back(entry);
  }
  env_strings.insert(env_strings.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> envp, args;
  for (const std::string& s : env_strings) {
    envp.push_back(const_cast<char*>(s.c_str()));
  }
  envp.push_back(nullptr);
  for (const std::string& s : argv)
    args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);

  Fd out_read, out_write, err_read, err_write;
  make_pipe(out_read, out_write);
  make_pipe(err_read, err_write);
  FileActions actions;
  actions.open(STDIN_FILENO, "/dev/null", O_RDONLY);
  // dup2 clears close-on-exec on the target, so only these ends survive.
  actions.dup2(out_write.get(), STDOUT_FILENO);
  actions.dup2(err_write.get(), STDERR_FILENO);

  pid_t pid = -1;
  if (const int rc = posix_spawn(&pid, args[0], actions.get(), nullptr,
                                 args.data(), envp.data());
      rc != 0) {
    fail(rc, "posix_spawn");
  }
  out_write.reset();
  err_write.reset();

  ProcessResult result;
  pollfd fds[2] = {{out_read.get(), POLLIN, 0}, {err_read.get(), POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_streams = 2;
  while (open_streams > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      fail(errno, "poll");
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        fail(errno, "read");
      }
      if (n == 0) {
        fds[i].fd = -1;  // poll ignores negative descriptors
        --open_streams;
      } else {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      }
    }
  }

  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) fail(errno, "waitpid");
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  return result;
}

const char* exec_unavailable_reason() {
  static const int error = [] {
    const std::string self = self_executable();
    char* const argv[] = {const_cast<char*>(self.c_str()),
                          const_cast<char*>("--gtest_list_tests"),
                          const_cast<char*>("--gtest_filter=-*"), nullptr};
    Fd report_read, report_write;
    make_pipe(report_read, report_write);
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) fail(errno, "fork");
    if (pid == 0) {
      // Only async-signal-safe calls from here: the parent may have threads.
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) {
        (void)::dup2(null, STDOUT_FILENO);
        (void)::dup2(null, STDERR_FILENO);
      }
      ::execve(argv[0], argv, environ);
      const int err = errno;  // the pipe closes on a successful exec instead
      (void)!::write(report_write.get(), &err, sizeof err);
      ::_exit(127);
    }
    report_write.reset();
    int err = 0;
    ssize_t n;
    while ((n = ::read(report_read.get(), &err, sizeof err)) < 0 &&
           errno == EINTR) {
    }
    if (n < 0) fail(errno, "read");
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) fail(errno, "waitpid");
    }
    return n == sizeof err ? err : 0;
  }();
  if (error == 0) return nullptr;
  if (error == ENOEXEC)
    return "this process cannot start programs built for its own machine "
           "(execve: ENOEXEC): it runs under an emulator such as qemu-user "
           "without binfmt_misc";
  return "this process cannot start its own executable again (execve "
         "failed)";
}

std::string self_executable() {
  char path[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path);
  if (n < 0) fail(errno, "readlink /proc/self/exe");
  if (static_cast<std::size_t>(n) == sizeof path) {
    fail(ENAMETOOLONG, "readlink /proc/self/exe");
  }
  return std::string(path, static_cast<std::size_t>(n));
}

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr ? value : "";
}

}  // namespace wxa::test
