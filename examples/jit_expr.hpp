// SPDX-License-Identifier: MIT
// jit_expr: a small real JIT. Random integer expressions over x are compiled
// to x86-64 with Xbyak, handed to a CodeSink in batches (a wxarena CodeHeap
// here, other memory in the benchmarks), run, and checked against an
// interpreter.
//
// Header-only, so that bench/ can run the very same JIT on its own sinks:
//
//   jit_expr::Config config;              // 50,000 functions, batches of 1024
//   auto sink = jit_expr::WxarenaSink::create().value();
//   jit_expr::Report r = jit_expr::run_jit(*sink, config);
//   // or, in one call: jit_expr::run_jit(wxa::Options{}, config)
//
// The expressions: leaves x and 64-bit constants; +, -, *, ^, &, |, unsigned
// min and max (cmp + cmov), negation, not, shifts by a constant, and x^k
// for a constant k (a counted loop). Arithmetic wraps modulo 2^64 in both the
// compiled code and the interpreter. Code generation is Sethi-Ullman over
// eight caller-saved registers (no stack traffic), with x in rdi and the
// result in rax: `std::uint64_t f(std::uint64_t x)`.
//
// The code is position-independent (its only jumps are to labels inside
// the function), so Xbyak generates it into an ordinary buffer and the sink
// copies the bytes wherever they will run: valid in any backend.
#pragma once

#include <xbyak/xbyak.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"
#include "wxarena/result.hpp"

namespace jit_expr {

// --- expressions and their interpreter ---------------------------------------

enum class Op : std::uint8_t {
  x,
  konst,
  add,
  sub,
  mul,
  bxor,
  band,
  bor,
  umin,
  umax,
  neg,
  bnot,
  shl,
  shr,
  pow,
};

/// One node; children come before their parent in Expr::nodes.
struct Node {
  Op op = Op::x;
  std::uint8_t need = 1;  ///< registers to evaluate it (Sethi-Ullman)
  std::uint32_t a = 0, b = 0;
  std::uint64_t k = 0;  ///< the constant, shift count or exponent
};

/// An expression: its root is the last node.
struct Expr {
  std::vector<Node> nodes;
};

/// Registers the compiler may use (caller-saved, not rdi).
inline constexpr int kRegisters = 8;

/// splitmix64: small, fast and the same everywhere.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) noexcept : s_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::uint32_t below(std::uint32_t n) noexcept {
    return static_cast<std::uint32_t>(next() % n);
  }

 private:
  std::uint64_t s_;
};

namespace detail {
inline std::uint32_t push(Expr& e, Node n) {
  e.nodes.push_back(n);
  return static_cast<std::uint32_t>(e.nodes.size() - 1);
}

inline std::uint64_t random_constant(Rng& rng) {
  switch (rng.below(3)) {
    case 0:
      return rng.below(256);  // imm8-sized
    case 1:
      return static_cast<std::uint64_t>(
          static_cast<std::int32_t>(rng.next()));  // sign-extended imm32
    default:
      return rng.next();  // a full 64-bit immediate
  }
}

// A random subtree with about `budget` operators; returns its index.
inline std::uint32_t grow(Expr& e, Rng& rng, int budget) {
  if (budget <= 0) {
    Node n;
    if (rng.below(5) < 3) {
      n.op = Op::x;
    } else {
      n.op = Op::konst;
      n.k = random_constant(rng);
    }
    return push(e, n);
  }
  const std::uint32_t pick = rng.below(20);
  Node n;
  if (pick < 14) {  // binary
    static constexpr Op kBinary[] = {Op::add,  Op::sub, Op::mul,  Op::bxor,
                                     Op::band, Op::bor, Op::umin, Op::umax};
    n.op = kBinary[pick % 8];
    const int left = static_cast<int>(
        rng.below(static_cast<std::uint32_t>(budget)));  // 0 .. budget-1
    n.a = grow(e, rng, left);
    n.b = grow(e, rng, budget - 1 - left);
    const std::uint8_t na = e.nodes[n.a].need, nb = e.nodes[n.b].need;
    n.need = na == nb ? static_cast<std::uint8_t>(na + 1) : std::max(na, nb);
  } else {  // unary
    static constexpr Op kUnary[] = {Op::neg, Op::bnot, Op::shl,
                                    Op::shr, Op::pow,  Op::neg};
    n.op = kUnary[pick - 14];
    n.a = grow(e, rng, budget - 1);
    n.need = e.nodes[n.a].need;
    if (n.op == Op::shl || n.op == Op::shr) n.k = 1 + rng.below(63);
    if (n.op == Op::pow) {
      n.k = 1 + rng.below(7);
      n.need = std::max<std::uint8_t>(n.need, 3);  // value, product, count
    }
  }
  return push(e, n);
}
}  // namespace detail

/// A random expression with 1 to `max_ops` operators (at most 63, which
/// keeps it within kRegisters).
inline void random_expr(Rng& rng, Expr& out, int max_ops = 40) {
  out.nodes.clear();
  detail::grow(
      out, rng,
      1 + static_cast<int>(rng.below(static_cast<std::uint32_t>(max_ops))));
}

/// The interpreter: the meaning every compiled function must match.
inline std::uint64_t evaluate(const Expr& e, std::uint64_t x,
                              std::vector<std::uint64_t>& scratch) {
  scratch.resize(e.nodes.size());
  for (std::size_t i = 0; i < e.nodes.size(); ++i) {
    const Node& n = e.nodes[i];
    const std::uint64_t a = n.op >= Op::add ? scratch[n.a] : 0;
    const std::uint64_t b =
        n.op >= Op::add && n.op <= Op::umax ? scratch[n.b] : 0;
    std::uint64_t v = 0;
    switch (n.op) {
      case Op::x:
        v = x;
        break;
      case Op::konst:
        v = n.k;
        break;
      case Op::add:
        v = a + b;
        break;
      case Op::sub:
        v = a - b;
        break;
      case Op::mul:
        v = a * b;
        break;
      case Op::bxor:
        v = a ^ b;
        break;
      case Op::band:
        v = a & b;
        break;
      case Op::bor:
        v = a | b;
        break;
      case Op::umin:
        v = a < b ? a : b;
        break;
      case Op::umax:
        v = a < b ? b : a;
        break;
      case Op::neg:
        v = 0 - a;
        break;
      case Op::bnot:
        v = ~a;
        break;
      case Op::shl:
        v = a << n.k;
        break;
      case Op::shr:
        v = a >> n.k;
        break;
      case Op::pow:
        v = 1;
        for (std::uint64_t i2 = 0; i2 < n.k; ++i2) v *= a;
        break;
    }
    scratch[i] = v;
  }
  return scratch.back();
}

// --- the compiler ------------------------------------------------------------

/// Compiles expressions with Xbyak into its own plain buffer (Xbyak's
/// user-buffer mode: no allocation, no protection change; the buffer is never
/// executed). Reused for every function.
class Compiler : Xbyak::CodeGenerator {
 public:
  Compiler() : Xbyak::CodeGenerator(sizeof buffer_, buffer_) {}

  /// The machine code of `e`; valid until the next compile().
  std::span<const std::uint8_t> compile(const Expr& e) {
    reset();
    expr_ = &e;
    emit(static_cast<std::uint32_t>(e.nodes.size() - 1), 0);
    ret();
    return {getCode(), getSize()};
  }

 private:
  const Xbyak::Reg64& reg(int i) const {
    const Xbyak::Reg64* const regs[kRegisters] = {&rax, &rcx, &rdx, &rsi,
                                                  &r8,  &r9,  &r10, &r11};
    return *regs[i];
  }

  // Evaluates node `i` into reg(d), using only reg(d) .. reg(d + need - 1).
  void emit(std::uint32_t i, int d) {
    const Node& n = expr_->nodes[i];
    if (d + n.need > kRegisters) throw Xbyak::Error(Xbyak::ERR_INTERNAL);
    const Xbyak::Reg64& r = reg(d);
    switch (n.op) {
      case Op::x:
        mov(r, rdi);
        return;
      case Op::konst:
        mov(r, n.k);
        return;
      case Op::neg:
      case Op::bnot:
      case Op::shl:
      case Op::shr:
      case Op::pow:
        emit(n.a, d);
        unary(n, d);
        return;
      default:
        break;
    }
    // Binary: the child needing more registers first, so the other one
    // fits in what is left.
    const bool left_first = expr_->nodes[n.a].need >= expr_->nodes[n.b].need;
    emit(left_first ? n.a : n.b, d);
    emit(left_first ? n.b : n.a, d + 1);
    const Xbyak::Reg64& lhs = left_first ? reg(d) : reg(d + 1);
    const Xbyak::Reg64& rhs = left_first ? reg(d + 1) : reg(d);
    switch (n.op) {
      case Op::add:
        add(lhs, rhs);
        break;
      case Op::sub:
        sub(lhs, rhs);
        break;
      case Op::mul:
        imul(lhs, rhs);
        break;
      case Op::bxor:
        xor_(lhs, rhs);
        break;
      case Op::band:
        and_(lhs, rhs);
        break;
      case Op::bor:
        or_(lhs, rhs);
        break;
      case Op::umin:
        cmp(lhs, rhs);
        cmova(lhs, rhs);
        break;
      case Op::umax:
        cmp(lhs, rhs);
        cmovb(lhs, rhs);
        break;
      default:
        throw Xbyak::Error(Xbyak::ERR_INTERNAL);
    }
    if (!left_first) mov(r, lhs);
  }

  void unary(const Node& n, int d) {
    const Xbyak::Reg64& r = reg(d);
    switch (n.op) {
      case Op::neg:
        neg(r);
        return;
      case Op::bnot:
        not_(r);
        return;
      case Op::shl:
        shl(r, static_cast<int>(n.k));
        return;
      case Op::shr:
        shr(r, static_cast<int>(n.k));
        return;
      case Op::pow: {
        // product = 1; count = k; do product *= r while (--count);
        const Xbyak::Reg64& product = reg(d + 1);
        const Xbyak::Reg64& count = reg(d + 2);
        Xbyak::Label loop;
        mov(product, 1);
        mov(count.cvt32(), static_cast<std::uint32_t>(n.k));
        L(loop);
        imul(product, r);
        dec(count.cvt32());
        jnz(loop);
        mov(r, product);
        return;
      }
      default:
        throw Xbyak::Error(Xbyak::ERR_INTERNAL);
    }
  }

  alignas(64) std::uint8_t buffer_[16384];
  const Expr* expr_ = nullptr;
};

// --- where code goes
// -----------------------------------------------------------

/// Memory for compiled functions. add() copies code in and says where it
/// will run; publish() makes everything added so far callable.
class CodeSink {
 public:
  virtual ~CodeSink() = default;
  /// The address the code will run at (callable after publish()), or
  /// nullptr on failure (error() says why).
  virtual const void* add(std::span<const std::uint8_t> code) = 0;
  /// Makes every function added so far callable. false on failure.
  virtual bool publish() = 0;
  [[nodiscard]] virtual std::string error() const { return {}; }
};

/// Strict W^X: a wxarena CodeHeap, published in one batch commit per batch.
class WxarenaSink final : public CodeSink {
 public:
  /// Errors: Arena::create()'s and CodeHeap::create()'s.
  [[nodiscard]] static wxa::Result<std::unique_ptr<WxarenaSink>> create(
      const wxa::Options& options = {}) {
    wxa::Result<wxa::Arena> arena = wxa::Arena::create(options);
    if (!arena) return arena.error();
    std::unique_ptr<WxarenaSink> sink(new WxarenaSink(std::move(*arena)));
    wxa::Result<wxa::CodeHeap> heap = wxa::CodeHeap::create(sink->arena_);
    if (!heap) return heap.error();
    sink->heap_ = std::make_unique<wxa::CodeHeap>(std::move(*heap));
    return sink;
  }

  const void* add(std::span<const std::uint8_t> code) override {
    wxa::Result<wxa::Function> f = heap_->emit(std::as_bytes(code));
    if (!f) {
      error_ = f.error();
      return nullptr;
    }
    functions_.push_back(f->rx);
    return f->rx;
  }
  bool publish() override {
    wxa::Result<wxa::CommitReport> r = heap_->publish();
    if (!r) error_ = r.error();
    return r.has_value();
  }
  [[nodiscard]] std::string error() const override {
    return error_.to_string();
  }

  [[nodiscard]] wxa::Arena& arena() noexcept { return arena_; }
  [[nodiscard]] wxa::CodeHeap& heap() noexcept { return *heap_; }
  /// Every function added, in order (released ones included).
  [[nodiscard]] const std::vector<const void*>& functions() const noexcept {
    return functions_;
  }

  WxarenaSink(const WxarenaSink&) = delete;
  WxarenaSink& operator=(const WxarenaSink&) = delete;

 private:
  explicit WxarenaSink(wxa::Arena arena) : arena_(std::move(arena)) {}
  wxa::Arena arena_;                     // declared first: destroyed last
  std::unique_ptr<wxa::CodeHeap> heap_;  // refers to arena_
  std::vector<const void*> functions_;
  wxa::Error error_;
};

// --- the driver
// ----------------------------------------------------------------

struct Config {
  std::size_t functions = 50000;
  std::size_t batch = 1024;  ///< functions per publish
  std::uint64_t seed = 1;
  int max_ops = 40;    ///< operators per expression, at most
  int inputs = 4;      ///< calls per function, each checked when verifying
  bool verify = true;  ///< compare every result with the interpreter
};

struct Report {
  std::size_t functions = 0, code_bytes = 0, batches = 0, calls = 0;
  std::size_t mismatches = 0;
  std::uint64_t checksum = 0;  ///< of every result: equal across sinks
  /// Seconds spent generating expressions and compiling them with Xbyak,
  /// copying code into the sink, publishing, calling the compiled code, and
  /// interpreting (verify).
  double compile_s = 0, add_s = 0, publish_s = 0, run_s = 0, verify_s = 0;
  std::string error;  ///< empty on success
  [[nodiscard]] bool ok() const noexcept {
    return error.empty() && mismatches == 0;
  }
  [[nodiscard]] double total_s() const noexcept {
    return compile_s + add_s + publish_s + run_s + verify_s;
  }
};

namespace detail {
// One batch's inputs, drawn before its expressions: run_jit() and
// expected_checksum() must consume the generator in the same order.
inline void draw_inputs(Rng& rng, std::vector<std::uint64_t>& xs) {
  for (std::uint64_t& x : xs) x = rng.next() >> rng.below(64);
}

// Folds one result into Report::checksum (FNV-1a style, order-sensitive).
inline std::uint64_t mix(std::uint64_t checksum, std::uint64_t value) {
  return (checksum ^ value) * 0x100000001B3ull;
}

// The body of run_jit(); Xbyak reports failures by throwing.
inline void run_batches(CodeSink& sink, const Config& config, Report& rep) {
  using Clock = std::chrono::steady_clock;
  auto seconds = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  Rng rng(config.seed);
  Compiler compiler;
  const std::size_t batch = config.batch ? config.batch : 1;
  std::vector<Expr> exprs(batch);
  std::vector<const void*> entries(batch);
  std::vector<std::uint64_t> xs(static_cast<std::size_t>(config.inputs));
  std::vector<std::uint64_t> results(batch * xs.size());
  std::vector<std::uint64_t> scratch;

  for (std::size_t done = 0; done < config.functions;) {
    const std::size_t n = std::min(batch, config.functions - done);
    draw_inputs(rng, xs);

    auto t0 = Clock::now();
    double add_s = 0;
    for (std::size_t i = 0; i < n; ++i) {
      random_expr(rng, exprs[i], config.max_ops);
      std::span<const std::uint8_t> code = compiler.compile(exprs[i]);
      auto a0 = Clock::now();
      entries[i] = sink.add(code);
      add_s += seconds(a0, Clock::now());
      if (!entries[i]) {
        rep.error = "add: " + sink.error();
        return;
      }
      rep.code_bytes += code.size();
    }
    auto t1 = Clock::now();
    if (!sink.publish()) {
      rep.error = "publish: " + sink.error();
      return;
    }
    auto t2 = Clock::now();
    for (std::size_t i = 0; i < n; ++i) {
      auto* f = reinterpret_cast<std::uint64_t (*)(std::uint64_t)>(
          const_cast<void*>(entries[i]));
      for (std::size_t j = 0; j < xs.size(); ++j)
        results[i * xs.size() + j] = f(xs[j]);
    }
    auto t3 = Clock::now();
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < xs.size(); ++j) {
        const std::uint64_t got = results[i * xs.size() + j];
        rep.checksum = mix(rep.checksum, got);
        if (config.verify && evaluate(exprs[i], xs[j], scratch) != got)
          ++rep.mismatches;
      }
    }
    auto t4 = Clock::now();

    rep.compile_s += seconds(t0, t1) - add_s;
    rep.add_s += add_s;
    rep.publish_s += seconds(t1, t2);
    rep.run_s += seconds(t2, t3);
    rep.verify_s += seconds(t3, t4);
    rep.functions += n;
    rep.calls += n * xs.size();
    ++rep.batches;
    done += n;
  }
}
}  // namespace detail

/// Compiles config.functions random expressions (the same ones for the same
/// seed), publishes them through `sink` in batches, calls each on
/// config.inputs values, and (if config.verify) checks every result against
/// the interpreter. Functions stay in the sink.
inline Report run_jit(CodeSink& sink, const Config& config) {
  Report rep;
  try {
    detail::run_batches(sink, config, rep);
  } catch (const std::exception& e) {  // Xbyak::Error, std::bad_alloc
    rep.error = std::string("compile: ") + e.what();
  }
  return rep;
}

/// The checksum run_jit() reports for `config` (whatever the sink),
/// computed by the interpreter alone: no code is compiled or run. Ignores
/// config.verify.
inline std::uint64_t expected_checksum(const Config& config) {
  Rng rng(config.seed);
  const std::size_t batch = config.batch ? config.batch : 1;
  Expr expr;
  std::vector<std::uint64_t> xs(static_cast<std::size_t>(config.inputs));
  std::vector<std::uint64_t> scratch;
  std::uint64_t checksum = 0;
  for (std::size_t done = 0; done < config.functions;) {
    const std::size_t n = std::min(batch, config.functions - done);
    detail::draw_inputs(rng, xs);
    for (std::size_t i = 0; i < n; ++i) {
      random_expr(rng, expr, config.max_ops);
      for (const std::uint64_t x : xs)
        checksum = detail::mix(checksum, evaluate(expr, x, scratch));
    }
    done += n;
  }
  return checksum;
}

/// run_jit() on a fresh strict-W^X WxarenaSink made with `options`; the
/// functions are released with it. Errors: the sink's creation errors.
inline wxa::Result<Report> run_jit(const wxa::Options& options,
                                   const Config& config) {
  wxa::Result<std::unique_ptr<WxarenaSink>> sink = WxarenaSink::create(options);
  if (!sink) return sink.error();
  return run_jit(**sink, config);
}

}  // namespace jit_expr
