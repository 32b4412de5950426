// SPDX-License-Identifier: MIT
// wxa-lli: runs an LLVM program (bitcode or textual IR) the way lli does,
// JIT-linked by LLVM 14's ORC LLJIT with JITLink into a wxa::Arena under
// strict W^X, and passes main()'s exit status through. The reference for
// wiring wxa::llvm::JitLinkMemoryManager (README.md shows the same setup).
//
//   wxa-lli [options] program.bc|program.ll [arguments of main...]
//
// Host symbols (libc, libm, ...) are resolved from the process. The
// program's constructors run before main; its atexit() / __cxa_atexit()
// handlers and static destructors run after main returns or calls exit(),
// before the JIT, the manager and the arena go away (glibc keeps atexit()
// out of libc.so: LLJIT's generic platform defines atexit and
// __cxa_atexit in the JIT and runs what they record at deinitialize();
// exit() is defined here to end main() and return to that; exit() on
// another thread than main()'s ends the process without them).
#include <llvm/ExecutionEngine/JITLink/EHFrameSupport.h>
#include <llvm/ExecutionEngine/JITLink/JITLinkMemoryManager.h>
#include <llvm/ExecutionEngine/ObjectCache.h>
#include <llvm/ExecutionEngine/Orc/CompileUtils.h>
#include <llvm/ExecutionEngine/Orc/Core.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ObjectLinkingLayer.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IRReader/IRReader.h>
#include <llvm/Support/CodeGen.h>
#include <llvm/Support/Error.h>
#include <llvm/Support/FileSystem.h>
#include <llvm/Support/Format.h>
#include <llvm/Support/MemoryBuffer.h>
#include <llvm/Support/SourceMgr.h>
#include <llvm/Support/TargetSelect.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Support/xxhash.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "wxarena/adapters/llvm_jitlink.hpp"
#include "wxarena/arena.hpp"

namespace orc = llvm::orc;
namespace jitlink = llvm::jitlink;

namespace {

constexpr char kUsage[] =
    "usage: wxa-lli [options] program.bc|program.ll [arguments...]\n"
    "Runs the program's main() JIT-linked into a wxarena arena under strict "
    "W^X.\n"
    "  --backend=NAME   automatic (default), protect, dual_map, "
    "kernel_write;\n"
    "                   or llvm: LLVM's own InProcessMemoryManager, no arena\n"
    "  --reserve=SIZE   the arena's reservation (K, M, G suffixes; default "
    "the\n"
    "                   library's, wxa::Options{}.reserve_bytes)\n"
    "  --stats          print the arena's stats after main() returns\n"
    "  --segments       print each linked graph's sections: protection,\n"
    "                   address, size\n"
    "  --cache=DIR      keep the program's compiled object in DIR and link\n"
    "                   it from there next time (what is timed is then the\n"
    "                   link, not the compile)\n"
    "  --time           print the time to materialize main and to run it\n"
    "                   (wall and CPU), peak RSS and the process's VMAs\n"
    "Exit status: main()'s, or 2 when the program cannot be loaded or "
    "linked.\n";

struct Args {
  std::optional<wxa::Backend> backend = wxa::Backend::automatic;  // none: llvm
  std::size_t reserve = wxa::Options{}.reserve_bytes;
  bool stats = false, time = false, segments = false;
  std::string cache;  // empty: no object cache
  std::string program;
  std::vector<std::string> rest;  // main's arguments after argv[0]
};

bool parse_size(std::string_view text, std::size_t& out) {
  if (text.empty()) return false;
  std::size_t value = 0, i = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (value > (SIZE_MAX - 9) / 10) return false;
    value = value * 10 + static_cast<std::size_t>(text[i] - '0');
  }
  if (i == 0) return false;
  unsigned shift = 0;
  if (i < text.size()) {
    switch (text[i]) {
      case 'K':
      case 'k':
        shift = 10;
        break;
      case 'M':
      case 'm':
        shift = 20;
        break;
      case 'G':
      case 'g':
        shift = 30;
        break;
      default:
        return false;
    }
    if (++i != text.size()) return false;
  }
  if (shift && value > (SIZE_MAX >> shift)) return false;
  out = value << shift;
  return true;
}

bool parse_args(int argc, char** argv, Args& args) {
  int i = 1;
  for (; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--") {
      ++i;
      break;
    }
    if (a.rfind("--", 0) != 0) break;
    if (a.rfind("--backend=", 0) == 0) {
      const std::string_view name = a.substr(10);
      if (name == "llvm") {
        args.backend.reset();
        continue;
      }
      bool found = false;
      for (wxa::Backend b :
           {wxa::Backend::automatic, wxa::Backend::protect,
            wxa::Backend::dual_map, wxa::Backend::kernel_write})
        if (name == wxa::to_string(b)) args.backend = b, found = true;
      if (!found) {
        std::fprintf(stderr, "wxa-lli: unknown backend '%.*s'\n",
                     static_cast<int>(name.size()), name.data());
        return false;
      }
    } else if (a.rfind("--reserve=", 0) == 0) {
      if (!parse_size(a.substr(10), args.reserve)) {
        std::fprintf(stderr, "wxa-lli: bad size in '%s'\n", argv[i]);
        return false;
      }
    } else if (a.rfind("--cache=", 0) == 0) {
      args.cache = std::string(a.substr(8));
      if (args.cache.empty()) {
        std::fprintf(stderr, "wxa-lli: --cache needs a directory\n");
        return false;
      }
    } else if (a == "--segments") {
      args.segments = true;
    } else if (a == "--stats") {
      args.stats = true;
    } else if (a == "--time") {
      args.time = true;
    } else if (a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "wxa-lli: unknown option '%s'\n%s", argv[i], kUsage);
      return false;
    }
  }
  if (i >= argc) {
    std::fputs(kUsage, stderr);
    return false;
  }
  args.program = argv[i++];
  for (; i < argc; ++i) args.rest.emplace_back(argv[i]);
  return true;
}

// --- exit() ------------------------------------------------------------------
// The program's exit() ends main() here, so that its atexit handlers run
// (LLJIT's deinitialize) before the JIT and the arena are destroyed. The
// program's frames are abandoned as exit() abandons them (no automatic
// object is destroyed); only they lie between run_main's setjmp and the
// longjmp.

std::jmp_buf g_exit_jump;
int g_exit_status = 0;
thread_local bool g_in_main = false;  // only main()'s thread jumps back

extern "C" [[noreturn]] void wxa_lli_exit(int status) {
  if (g_in_main) {
    g_in_main = false;
    g_exit_status = status;
    std::longjmp(g_exit_jump, 1);
  }
  // From another thread, a handler or a destructor: the process ends.
  std::exit(status);
}

using MainFn = int(int, char**, char**);

int run_main(MainFn* main_fn, int argc, char** argv) {
  if (setjmp(g_exit_jump)) return g_exit_status;
  g_in_main = true;
  const int status = main_fn(argc, argv, environ);
  g_in_main = false;
  return status;
}

// --- what --time and --stats print ------------------------------------------

std::size_t process_vmas() {
  std::ifstream maps("/proc/self/maps");
  std::size_t n = 0;
  for (std::string line; std::getline(maps, line);) ++n;
  return n;
}

// CPU time of the process (user + system), in ms: what a phase cost, less
// sensitive than the wall clock to other processes on the machine.
double cpu_ms() {
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
  auto ms = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) * 1e3 +
           static_cast<double>(t.tv_usec) / 1e3;
  };
  return ms(usage.ru_utime) + ms(usage.ru_stime);
}

long peak_rss_kib() {
  struct rusage usage {};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
  return usage.ru_maxrss;
}

void print_stats(const wxa::Stats& s) {
  auto chunks = [&](wxa::State st) { return s.chunks_in(st); };
  auto kib = [](std::size_t b) {
    return static_cast<unsigned long long>(b >> 10);
  };
  std::fprintf(
      stderr,
      "wxa-lli: arena: backend %s, %llu KiB committed of %llu MiB reserved, "
      "%llu kernel VMAs (budget %llu)\n"
      "wxa-lli: chunks: %zu writable (%llu KiB), %zu executable (%llu KiB), "
      "%zu read-only (%llu KiB), %zu retired\n"
      "wxa-lli: %llu allocations, %llu commits; system calls %llu: mmap %llu, "
      "munmap %llu, mprotect %llu, madvise %llu, memfd %llu, membarrier "
      "%llu, pwritev %llu, other %llu\n",
      std::string(wxa::to_string(s.backend)).c_str(), kib(s.committed_bytes),
      static_cast<unsigned long long>(s.reserved_bytes >> 20),
      static_cast<unsigned long long>(s.vmas),
      static_cast<unsigned long long>(s.vma_budget),
      chunks(wxa::State::writable), kib(s.bytes_in(wxa::State::writable)),
      chunks(wxa::State::executable), kib(s.bytes_in(wxa::State::executable)),
      chunks(wxa::State::read_only), kib(s.bytes_in(wxa::State::read_only)),
      chunks(wxa::State::retired),
      static_cast<unsigned long long>(s.allocations),
      static_cast<unsigned long long>(s.commits),
      static_cast<unsigned long long>(s.syscalls.total()),
      static_cast<unsigned long long>(s.syscalls.mmap),
      static_cast<unsigned long long>(s.syscalls.munmap),
      static_cast<unsigned long long>(s.syscalls.mprotect),
      static_cast<unsigned long long>(s.syscalls.madvise),
      static_cast<unsigned long long>(s.syscalls.memfd),
      static_cast<unsigned long long>(s.syscalls.membarrier),
      static_cast<unsigned long long>(s.syscalls.write),
      static_cast<unsigned long long>(s.syscalls.other));
}

int fail(llvm::Error error) {
  llvm::errs() << "wxa-lli: " << llvm::toString(std::move(error)) << "\n";
  return 2;
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t)
      .count();
}

// --- the object cache -------------------------------------------------------
// The program's module compiled once, kept in a file named by a hash of the
// program's bytes and the target; other modules (the platform's) are
// compiled each time.

class ObjectFileCache final : public llvm::ObjectCache {
 public:
  ObjectFileCache(std::string module_id, std::string path)
      : module_id_(std::move(module_id)), path_(std::move(path)) {}

  void notifyObjectCompiled(const llvm::Module* m,
                            llvm::MemoryBufferRef object) override {
    if (m->getModuleIdentifier() != module_id_) return;
    // Written aside and renamed: runs side by side never see half a file.
    const std::string tmp = path_ + ".tmp" + std::to_string(getpid());
    {
      std::error_code ec;
      llvm::raw_fd_ostream out(tmp, ec);
      if (ec) {
        llvm::errs() << "wxa-lli: cannot write " << tmp << ": " << ec.message()
                     << "\n";
        return;
      }
      out << object.getBuffer();
    }
    if (std::error_code ec = llvm::sys::fs::rename(tmp, path_))
      llvm::errs() << "wxa-lli: cannot write " << path_ << ": " << ec.message()
                   << "\n";
  }

  std::unique_ptr<llvm::MemoryBuffer> getObject(
      const llvm::Module* m) override {
    if (m->getModuleIdentifier() != module_id_) return nullptr;
    auto buffer = llvm::MemoryBuffer::getFile(path_);
    if (!buffer) return nullptr;
    return std::move(*buffer);
  }

 private:
  std::string module_id_, path_;
};

// --- --segments -------------------------------------------------------------

// Prints each graph's sections once they have addresses: what JITLink asked
// the memory manager for, and where it went.
class SegmentPrinter final : public orc::ObjectLinkingLayer::Plugin {
 public:
  void modifyPassConfig(orc::MaterializationResponsibility&,
                        jitlink::LinkGraph&,
                        jitlink::PassConfiguration& config) override {
    config.PostAllocationPasses.push_back([](jitlink::LinkGraph& graph) {
      for (jitlink::Section& section : graph.sections()) {
        const jitlink::SectionRange range(section);
        if (range.empty()) continue;
        llvm::errs() << "wxa-lli: " << graph.getName() << ": "
                     << section.getName() << " " << section.getMemProt()
                     << " at "
                     << llvm::format_hex(range.getStart().getValue(), 14)
                     << ", " << range.getSize() << " bytes\n";
      }
      return llvm::Error::success();
    });
  }
  llvm::Error notifyFailed(orc::MaterializationResponsibility&) override {
    return llvm::Error::success();
  }
  llvm::Error notifyRemovingResources(orc::ResourceKey) override {
    return llvm::Error::success();
  }
  void notifyTransferringResources(orc::ResourceKey,
                                   orc::ResourceKey) override {}
};

// atexit() as glibc's libc_nonshared.a defines it, over the __cxa_atexit
// and __dso_handle that LLJIT's generic platform defines in the JIT: the
// handlers are recorded in the JIT and run at deinitialize(), in reverse
// order of registration together with those of __cxa_atexit.
constexpr char kAtExit[] = R"IR(
@__dso_handle = external hidden global i8
declare i32 @__cxa_atexit(void (i8*)*, i8*, i8*)
define i32 @atexit(void ()* %handler) {
  %h = bitcast void ()* %handler to void (i8*)*
  %r = call i32 @__cxa_atexit(void (i8*)* %h, i8* null, i8* @__dso_handle)
  ret i32 %r
}
)IR";

llvm::Error add_atexit(orc::LLJIT& jit) {
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> module = llvm::parseIR(
      llvm::MemoryBufferRef(kAtExit, "wxa-lli-atexit"), diagnostic, *context);
  if (!module)
    return llvm::createStringError(std::errc::invalid_argument, "%s",
                                   diagnostic.getMessage().str().c_str());
  module->setDataLayout(jit.getDataLayout());
  return jit.addIRModule(
      orc::ThreadSafeModule(std::move(module), std::move(context)));
}

// Loads, links and runs the program; the JIT is destroyed before this
// returns, the manager and the arena after (their owner is main()).
int run(const Args& args, std::unique_ptr<jitlink::JITLinkMemoryManager> own,
        jitlink::JITLinkMemoryManager& memory, const wxa::Arena* arena) {
  const auto start = std::chrono::steady_clock::now();
  const double start_cpu = cpu_ms();
  auto bytes = llvm::MemoryBuffer::getFile(args.program);
  if (!bytes) {
    std::fprintf(stderr, "wxa-lli: cannot read %s: %s\n", args.program.c_str(),
                 bytes.getError().message().c_str());
    return 2;
  }
  auto context = std::make_unique<llvm::LLVMContext>();
  llvm::SMDiagnostic diagnostic;
  std::unique_ptr<llvm::Module> module =
      llvm::parseIR((*bytes)->getMemBufferRef(), diagnostic, *context);
  if (!module) {
    diagnostic.print("wxa-lli", llvm::errs());
    return 2;
  }

  // The host's target in the small code model (32-bit PC-relative fixups
  // between the program's segments, which the manager keeps in reach),
  // position-independent: the host's own symbols are reached through the
  // GOT JITLink builds, wherever the arena lies.
  auto target = orc::JITTargetMachineBuilder::detectHost();
  if (!target) return fail(target.takeError());
  target->setCodeModel(llvm::CodeModel::Small);
  target->setRelocationModel(llvm::Reloc::PIC_);

  std::unique_ptr<ObjectFileCache> cache;
  if (!args.cache.empty()) {
    const std::string key =
        (*bytes)->getBuffer().str() + '\0' + target->getTargetTriple().str() +
        '\0' + target->getCPU() + '\0' + target->getFeatures().getString();
    char name[32];
    std::snprintf(name, sizeof name, "/%016llx.o",
                  static_cast<unsigned long long>(llvm::xxHash64(key)));
    cache = std::make_unique<ObjectFileCache>(module->getModuleIdentifier(),
                                              args.cache + name);
  }

  auto jit =
      orc::LLJITBuilder()
          .setJITTargetMachineBuilder(std::move(*target))
          .setCompileFunctionCreator(
              [&cache](orc::JITTargetMachineBuilder builder)
                  -> llvm::Expected<
                      std::unique_ptr<orc::IRCompileLayer::IRCompiler>> {
                auto machine = builder.createTargetMachine();
                if (!machine) return machine.takeError();
                return std::make_unique<orc::TMOwningSimpleCompiler>(
                    std::move(*machine), cache.get());
              })
          .setObjectLinkingLayerCreator(
              [&](orc::ExecutionSession& es, const llvm::Triple&)
                  -> llvm::Expected<std::unique_ptr<orc::ObjectLayer>> {
                std::unique_ptr<orc::ObjectLinkingLayer> layer;
                if (own)
                  layer = std::make_unique<orc::ObjectLinkingLayer>(
                      es, std::move(own));
                else
                  layer = std::make_unique<orc::ObjectLinkingLayer>(es, memory);
                // Unwind tables, read at their target address by the
                // unwinder (C++ exceptions, backtraces).
                layer->addPlugin(std::make_unique<
                                 orc::EHFrameRegistrationPlugin>(
                    es,
                    std::make_unique<jitlink::InProcessEHFrameRegistrar>()));
                // Read-only data sealed read-only (LLVM 14 asks for
                // read-write).
                layer->addPlugin(
                    std::make_unique<wxa::llvm::ReadOnlySectionsPlugin>());
                if (args.segments)
                  layer->addPlugin(std::make_unique<SegmentPrinter>());
                return layer;
              })
          .create();
  if (!jit) return fail(jit.takeError());
  orc::JITDylib& dylib = (*jit)->getMainJITDylib();

  // Host symbols, and exit() defined here (see wxa_lli_exit).
  auto process = orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      (*jit)->getDataLayout().getGlobalPrefix());
  if (!process) return fail(process.takeError());
  dylib.addGenerator(std::move(*process));
  orc::SymbolMap interposed;
  interposed[(*jit)->mangleAndIntern("exit")] = llvm::JITEvaluatedSymbol(
      llvm::pointerToJITTargetAddress(&wxa_lli_exit),
      llvm::JITSymbolFlags::Exported | llvm::JITSymbolFlags::Callable);
  if (llvm::Error e = dylib.define(orc::absoluteSymbols(interposed)))
    return fail(std::move(e));

  if (llvm::Error e = add_atexit(**jit)) return fail(std::move(e));
  if (llvm::Error e = (*jit)->addIRModule(
          orc::ThreadSafeModule(std::move(module), std::move(context))))
    return fail(std::move(e));
  auto main_symbol = (*jit)->lookup("main");
  if (!main_symbol) return fail(main_symbol.takeError());
  // Constructors (llvm.global_ctors), linked on demand like main.
  if (llvm::Error e = (*jit)->initialize(dylib)) return fail(std::move(e));
  const double materialize_ms = ms_since(start);
  const double run_cpu = cpu_ms();
  const double materialize_cpu = run_cpu - start_cpu;

  std::vector<std::string> strings;
  strings.push_back(args.program);
  strings.insert(strings.end(), args.rest.begin(), args.rest.end());
  std::vector<char*> argv;
  for (std::string& s : strings) argv.push_back(s.data());
  argv.push_back(nullptr);
  const auto run_start = std::chrono::steady_clock::now();
  int status = run_main(
      llvm::jitTargetAddressToPointer<MainFn*>(main_symbol->getAddress()),
      static_cast<int>(strings.size()), argv.data());
  // atexit handlers and static destructors, while everything is alive.
  if (llvm::Error e = (*jit)->deinitialize(dylib)) {
    llvm::errs() << "wxa-lli: " << llvm::toString(std::move(e)) << "\n";
    if (status == 0) status = 2;
  }
  std::fflush(nullptr);
  const double run_ms = ms_since(run_start);
  const double run_cpu_ms = cpu_ms() - run_cpu;

  if (args.time)
    std::fprintf(stderr,
                 "wxa-lli: materialize %.1f ms (cpu %.1f ms), run %.1f ms "
                 "(cpu %.1f ms), peak RSS %ld KiB, %zu VMAs\n",
                 materialize_ms, materialize_cpu, run_ms, run_cpu_ms,
                 peak_rss_kib(), process_vmas());
  if (args.stats && arena) print_stats(arena->stats());
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (!parse_args(argc, argv, args)) return 2;
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::InitializeNativeTargetAsmParser();

  if (!args.backend) {
    // LLVM's own manager: read-write pages made executable by mprotect.
    auto memory = jitlink::InProcessMemoryManager::Create();
    if (!memory) return fail(memory.takeError());
    jitlink::JITLinkMemoryManager& m = **memory;
    return run(args, std::move(*memory), m, nullptr);
  }
  // Lifetimes: the arena outlives the manager, the manager the JIT.
  wxa::Options options;
  options.backend = *args.backend;
  options.reserve_bytes = args.reserve;
  wxa::Result<wxa::Arena> arena = wxa::Arena::create(options);
  if (!arena) {
    std::fprintf(stderr, "wxa-lli: cannot create the arena: %s\n",
                 arena.error().to_string().c_str());
    return 2;
  }
  wxa::llvm::JitLinkMemoryManager memory(*arena);
  return run(args, nullptr, memory, &*arena);
}
