// SPDX-License-Identifier: MIT
// Errc messages, Error::to_string, and Result<T>'s value / error / move rules.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "pal/pal.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/result.hpp"

namespace wxa {
namespace {

constexpr Errc kLastErrc = Errc::wrong_process;

TEST(Errc, EveryCodeHasADistinctNonEmptyMessage) {
  std::set<std::string> seen;
  for (int i = 0; i <= static_cast<int>(kLastErrc); ++i) {
    const std::string_view s = to_string(static_cast<Errc>(i));
    SCOPED_TRACE(i);
    EXPECT_FALSE(s.empty());
    EXPECT_NE(s, "unknown error") << "code " << i << " has no message";
    EXPECT_TRUE(seen.insert(std::string(s)).second)
        << "code " << i << " repeats the message '" << s << "'";
  }
  // One past the last code is not a code: it must not borrow a real message.
  EXPECT_EQ(seen.count(std::string(
                to_string(static_cast<Errc>(static_cast<int>(kLastErrc) + 1)))),
            0u);
}

TEST(Error, ToStringNamesCodeChunkAndErrnoText) {
  int here = 0;
  const Error e(Errc::out_of_memory, detail::kNoMemory, &here);
  const std::string s = e.to_string();
  char address[32];
  std::snprintf(address, sizeof address, "%p", static_cast<void*>(&here));
  EXPECT_NE(s.find(to_string(Errc::out_of_memory)), std::string::npos) << s;
  EXPECT_NE(s.find(address), std::string::npos) << s;
#ifdef _WIN32
  // A GetLastError() number, described by FormatMessage.
  EXPECT_NE(s.find("(error 8: "), std::string::npos) << s;
  EXPECT_NE(s.find("memory"), std::string::npos) << s;
#else
  EXPECT_NE(s.find(std::strerror(ENOMEM)), std::string::npos) << s;
  EXPECT_NE(s.find("12"), std::string::npos) << s;  // the errno number
#endif

  const Error plain(Errc::double_release);
  EXPECT_EQ(plain.to_string(), to_string(Errc::double_release));
  EXPECT_EQ(plain.sys_errno(), 0);
  EXPECT_EQ(plain.chunk(), nullptr);
  EXPECT_TRUE(plain == Errc::double_release);
  EXPECT_FALSE(plain == Errc::not_allocated);
}

// Counts live instances, so moves that leak or destroy twice show up.
struct Tracked {
  static inline int live = 0;
  std::unique_ptr<int> p;
  explicit Tracked(int v) : p(std::make_unique<int>(v)) { ++live; }
  Tracked(Tracked&& o) noexcept : p(std::move(o.p)) { ++live; }
  Tracked& operator=(Tracked&&) = delete;
  ~Tracked() { --live; }
};

TEST(Result, HoldsAValueOrAnError) {
  Result<int> v = 7;
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(static_cast<bool>(v));
  EXPECT_EQ(v.value(), 7);
  EXPECT_EQ(*v, 7);
  EXPECT_EQ(v.value_or(9), 7);
  EXPECT_EQ(v.error().code(), Errc::ok);

  Result<int> e = Errc::zero_size;
  ASSERT_FALSE(e.has_value());
  EXPECT_FALSE(static_cast<bool>(e));
  EXPECT_EQ(e.error().code(), Errc::zero_size);
  EXPECT_EQ(e.value_or(9), 9);

  Result<void> ok;
  EXPECT_TRUE(ok.has_value());
  ok.value();  // does not die
  Result<void> bad = Error(Errc::exhausted, EINVAL);
  EXPECT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().sys_errno(), EINVAL);
}

TEST(Result, MoveTransfersTheValueAndDestroysEachObjectOnce) {
  ASSERT_EQ(Tracked::live, 0);
  {
    Result<Tracked> a = Tracked(42);
    ASSERT_TRUE(a);
    EXPECT_EQ(Tracked::live, 1);
    Result<Tracked> b(std::move(a));
    ASSERT_TRUE(b);
    EXPECT_EQ(*b->p, 42);
    EXPECT_EQ(a->p, nullptr) << "the value was copied, not moved";
    EXPECT_EQ(Tracked::live, 2);  // a's moved-from object still lives

    // value -> error: the old value is destroyed.
    Result<Tracked> err = Errc::exhausted;
    b = std::move(err);
    EXPECT_FALSE(b);
    EXPECT_EQ(b.error().code(), Errc::exhausted);
    EXPECT_EQ(Tracked::live, 1);

    // error -> value.
    b = std::move(a);
    ASSERT_TRUE(b);
    EXPECT_EQ(Tracked::live, 2);

    // Self-move leaves it intact.
    Result<Tracked> c = Tracked(5);
    Result<Tracked>& c_ref = c;
    c = std::move(c_ref);
    ASSERT_TRUE(c);
    EXPECT_EQ(*c->p, 5);
    EXPECT_EQ(Tracked::live, 3);

    // Moving the value out of an rvalue Result.
    Tracked out = std::move(c).value();
    EXPECT_EQ(*out.p, 5);
    EXPECT_EQ(Tracked::live, 4);
  }
  EXPECT_EQ(Tracked::live, 0) << "a Result leaked or double-destroyed";
}

// Out of line: with the error built in view, GCC 12 at -O2 with ASan warns
// (-Wmaybe-uninitialized) that the move reads the union's unset value,
// though the move constructor only reads it when has_ is true.
[[gnu::noinline]] Result<std::unique_ptr<int>> error_at(const void* p) {
  return Error(Errc::foreign_pointer, 0, p);
}

TEST(Result, ErrorSurvivesAMove) {
  int x = 0;
  Result<std::unique_ptr<int>> a = error_at(&x);
  Result<std::unique_ptr<int>> b(std::move(a));
  ASSERT_FALSE(b);
  EXPECT_EQ(b.error().code(), Errc::foreign_pointer);
  EXPECT_EQ(b.error().chunk(), &x);
}

TEST(ResultDeathTest, ValueOfAnErrorIsFatalWithAClearMessage) {
  Result<int> r = Error(Errc::double_release, 0, nullptr);
  EXPECT_DEATH((void)r.value(),
               "value\\(\\) of a Result holding an error: chunk already "
               "released");
  Result<void> v = Errc::not_allocated;
  EXPECT_DEATH(v.value(), "value\\(\\) of a Result holding an error");
}

}  // namespace
}  // namespace wxa
