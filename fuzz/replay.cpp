// SPDX-License-Identifier: MIT
// The replay programs' main(): runs inputs through a fuzz target without a
// fuzzing engine.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "harness.hpp"

namespace wxa::fuzz {
// Replays inputs without a fuzzing engine: each argument is a file, or a
// directory whose regular files are run in name order; no argument reads one
// input from standard input.
namespace {

bool run_file(const std::string& path,
              void (*run)(const std::uint8_t*, std::size_t)) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    std::fprintf(stderr, "wxa-fuzz: cannot open %s\n", path.c_str());
    return false;
  }
  std::vector<std::uint8_t> data;
  std::uint8_t buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0)
    data.insert(data.end(), buf, buf + n);
  std::fclose(f);
  run(data.data(), data.size());
  if (std::getenv("WXA_FUZZ_TRACE"))
    std::printf("== %s\n%s", path.c_str(), trace().c_str());
  return true;
}

}  // namespace

int replay_main(int argc, char** argv,
                void (*run)(const std::uint8_t*, std::size_t)) {
  std::size_t inputs = 0;
  if (argc < 2) {
    std::vector<std::uint8_t> data;
    int c = 0;
    while ((c = std::getchar()) != EOF)
      data.push_back(static_cast<std::uint8_t>(c));
    run(data.data(), data.size());
    inputs = 1;
  }
  for (int i = 1; i < argc; ++i) {
    struct stat st {};
    if (::stat(argv[i], &st) != 0) {
      std::fprintf(stderr, "wxa-fuzz: no such input: %s\n", argv[i]);
      return 2;
    }
    std::vector<std::string> files;
    if (S_ISDIR(st.st_mode)) {
      DIR* d = ::opendir(argv[i]);
      if (!d) return 2;
      while (const dirent* e = ::readdir(d)) {
        const std::string path = std::string(argv[i]) + "/" + e->d_name;
        struct stat fs {};
        if (e->d_name[0] != '.' && ::stat(path.c_str(), &fs) == 0 &&
            S_ISREG(fs.st_mode))
          files.push_back(path);
      }
      ::closedir(d);
      std::sort(files.begin(), files.end());
    } else {
      files.emplace_back(argv[i]);
    }
    for (const std::string& f : files) {
      if (!run_file(f, run)) return 2;
      ++inputs;
    }
  }
  if (inputs == 0) {
    std::fprintf(stderr, "wxa-fuzz: no inputs found\n");
    return 2;
  }
  std::printf("wxa-fuzz: %zu inputs replayed, every check passed\n", inputs);
  return 0;
}
}  // namespace wxa::fuzz
