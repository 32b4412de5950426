// SPDX-License-Identifier: MIT
// Strict mode of the dual_map backend, checked against /proc/self/maps by memfd
// file offset: a sealed chunk has no writable view anywhere, a writable one no
// executable view.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "support/backends.hpp"
#include "support/maps.hpp"
#include "support/memfd_maps.hpp"
#include "support/native_code.hpp"
#include "wxarena/arena.hpp"
#include "wxarena/code_heap.hpp"

namespace wxa {
namespace {

using test::MapLine;

// `unsigned f()` returning value, then traps over the rest of `out`.
void write_fn(std::span<std::byte> out, std::uint32_t value) {
  ASSERT_EQ(test::write_return_imm(out, value, out.size()), out.size());
}

Options dual_options() {
  Options o;
  o.backend = Backend::dual_map;
  o.reserve_bytes = std::size_t{64} << 20;
  o.quarantine = 2;  // so that recycled pages show up in a short test
  return o;
}

// A chunk the test keeps track of, with the state it must be in.
struct Tracked {
  Chunk chunk;
  State state;
};

// The offsets of a chunk in the memfd: rx - range().data(), as the design
// maps both views at the same offset as in the reservation.
std::uint64_t offset_of(const Arena& arena, const void* rx) {
  return static_cast<std::uint64_t>(static_cast<const std::byte*>(rx) -
                                    arena.range().data());
}

// For every tracked chunk: sealed ones have no writable memfd view of their
// offsets anywhere in the process and are mapped at rx with their memfd
// offsets and r-x / r--; writable ones have no executable view and are
// mapped writable at rw_range() + offset; retired ones have no view at all.
void check_chunks(const Arena& arena, const std::vector<Tracked>& chunks) {
  const std::uint64_t inode = test::arena_memfd_inode(arena);
  ASSERT_NE(inode, 0u) << "no memfd view of the arena in /proc/self/maps";
  for (const Tracked& t : chunks) {
    SCOPED_TRACE(testing::Message()
                 << to_string(t.state) << " chunk at " << t.chunk.rx());
    const std::uint64_t a = offset_of(arena, t.chunk.rx());
    const std::uint64_t b = a + t.chunk.size();
    const bool sealed =
        t.state == State::executable || t.state == State::read_only;
    if (sealed) {
      EXPECT_FALSE(test::memfd_view_with(inode, a, b, 'w'))
          << "a sealed chunk has a writable view of its memfd pages";
    } else {
      EXPECT_FALSE(test::memfd_view_with(inode, a, b, 'x'))
          << "a non-executable chunk has an executable view";
    }
    if (t.state == State::retired) {
      EXPECT_FALSE(test::memfd_view_with(inode, a, b, 'r'))
          << "a retired chunk is still mapped from the memfd";
    }
    if (t.state == State::executable || t.state == State::read_only) {
      MapLine l;
      ASSERT_TRUE(test::map_line_at(t.chunk.rx(), l));
      EXPECT_TRUE(l.wxarena_memfd()) << l.path;
      EXPECT_EQ(l.inode, inode);
      EXPECT_TRUE(l.shared());
      EXPECT_EQ(
          l.offset + (reinterpret_cast<std::uintptr_t>(t.chunk.rx()) - l.begin),
          a);
      EXPECT_GE(l.end, reinterpret_cast<std::uintptr_t>(t.chunk.rx()) +
                           t.chunk.size());
      const std::string perms(l.perms, 3);
      if (test::maps_tell_read_from_execute()) {
        EXPECT_EQ(perms, t.state == State::executable ? "r-x" : "r--");
      } else {
        EXPECT_TRUE(perms == "r-x" || perms == "r--")
            << perms
            << "; r-- and r-x are one class here: " << test::kMapsMergeReason;
      }
      // Its writable-view address is no view of the memfd: a placeholder.
      MapLine w;
      ASSERT_TRUE(test::map_line_at(arena.rw_range().data() + a, w));
      EXPECT_FALSE(w.wxarena_memfd());
      EXPECT_EQ(std::string(w.perms, 3), "---");
    } else if (t.state == State::writable) {
      MapLine w;
      ASSERT_TRUE(test::map_line_at(t.chunk.rw().data(), w));
      EXPECT_EQ(t.chunk.rw().data(), arena.rw_range().data() + a)
          << "the writable view is not at rw_range() + offset";
      EXPECT_TRUE(w.wxarena_memfd()) << w.path;
      EXPECT_EQ(w.inode, inode);
      EXPECT_EQ(
          w.offset +
              (reinterpret_cast<std::uintptr_t>(t.chunk.rw().data()) - w.begin),
          a);
      EXPECT_EQ(std::string(w.perms, 4), "rw-s");
      // Nothing is mapped executable (or at all, from the memfd) at rx.
      MapLine x;
      ASSERT_TRUE(test::map_line_at(t.chunk.rx(), x));
      EXPECT_FALSE(x.wxarena_memfd());
      EXPECT_EQ(std::string(x.perms, 3), "---");
    }
  }
}

void write_code(const Chunk& c, std::uint32_t value) {
  write_fn(c.rw(), value);
}
int call(const void* rx) {
  return reinterpret_cast<int (*)()>(const_cast<void*>(rx))();
}

TEST(DualMapStrict, EverySealedChunkHasNoWritableViewOfItsMemfdPages) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::dual_map);
  Result<Arena> arena = Arena::create(dual_options());
  ASSERT_TRUE(arena) << arena.error().to_string();
  ASSERT_EQ(arena->backend(), Backend::dual_map);
  ASSERT_NE(static_cast<const void*>(arena->rw_range().data()),
            static_cast<const void*>(arena->range().data()));
  const std::size_t ps = arena->page_size();

  // Chunks of 1..3 pages in every state, sealed one by one and in batches,
  // so that executable, read-only and writable pages sit side by side.
  std::vector<Tracked> chunks;
  for (int i = 0; i < 24; ++i) {
    Result<Chunk> c = arena->allocate(ps * (1 + i % 3));
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_EQ(c->rx(), static_cast<const void*>(
                           arena->range().data() +
                           (c->rw().data() - arena->rw_range().data())))
        << "views at different offsets";
    write_code(*c, 1000 + i);
    chunks.push_back({*c, State::writable});
  }
  Batch batch(*arena);
  for (int i = 0; i < 24; ++i) {
    if (i % 4 == 0) continue;  // stays writable
    const Seal to = i % 4 == 3 ? Seal::read_only : Seal::execute;
    if (i < 12) {
      ASSERT_TRUE(arena->seal(chunks[i].chunk, to));
    } else {
      batch.seal(chunks[i].chunk, to);
    }
    chunks[i].state =
        to == Seal::execute ? State::executable : State::read_only;
  }
  ASSERT_TRUE(batch.commit());
  check_chunks(*arena, chunks);

  for (const Tracked& t : chunks) {
    if (t.state == State::executable) {
      EXPECT_EQ(call(t.chunk.rx()),
                1000 + static_cast<int>(&t - chunks.data()));
    }
    if (t.state == State::read_only) {  // readable through the rx view
      std::byte want[test::return_imm_size];
      ASSERT_EQ(test::write_return_imm(
                    want, 1000u + static_cast<unsigned>(&t - chunks.data())),
                sizeof want);
      EXPECT_EQ(std::memcmp(t.chunk.rx(), want, sizeof want), 0);
    }
  }

  // Unseal one executable chunk, patch it, seal it again; release some.
  Result<Chunk> patched = arena->unseal(chunks[1].chunk.rx());
  ASSERT_TRUE(patched) << patched.error().to_string();
  chunks[1] = {*patched, State::writable};
  check_chunks(*arena, chunks);
  write_code(*patched, 4242);
  ASSERT_TRUE(arena->seal(*patched));
  chunks[1].state = State::executable;
  EXPECT_EQ(call(patched->rx()), 4242);

  for (int i : {2, 5, 8}) {
    ASSERT_TRUE(arena->release(chunks[i].chunk));
    chunks[i].state = State::retired;
  }
  check_chunks(*arena, chunks);
  EXPECT_TRUE(test::views_match_state(*arena));
  EXPECT_TRUE(test::audit_arena(*arena));
}

TEST(DualMapStrict, RecycledAndReopenedPagesKeepTheViewsConsistent) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::dual_map);
  Options o = dual_options();
  o.open_pages = 4;
  Result<Arena> arena = Arena::create(o);
  ASSERT_TRUE(arena) << arena.error().to_string();
  const std::size_t ps = arena->page_size();
  // Churn single-page chunks through seal, release, quarantine and reuse.
  std::vector<Tracked> live;
  for (int round = 0; round < 6; ++round) {
    std::vector<Tracked> fresh;
    for (int i = 0; i < 5; ++i) {
      Result<Chunk> c = arena->allocate(ps);
      ASSERT_TRUE(c) << c.error().to_string();
      write_code(*c, static_cast<std::uint32_t>(round * 10 + i));
      fresh.push_back({*c, State::writable});
    }
    Batch b(*arena);
    for (Tracked& t : fresh) {
      b.seal(t.chunk);
      t.state = State::executable;
    }
    for (Tracked& t : live) {
      b.release(t.chunk);
      t.state = State::retired;
    }
    ASSERT_TRUE(b.commit());
    std::vector<Tracked> all = live;
    all.insert(all.end(), fresh.begin(), fresh.end());
    check_chunks(*arena, all);
    for (std::size_t i = 0; i < fresh.size(); ++i)
      EXPECT_EQ(call(fresh[i].chunk.rx()), round * 10 + static_cast<int>(i));
    live = fresh;
  }
  EXPECT_GT(arena->stats().syscalls.munmap + arena->stats().syscalls.mmap, 0u);
  ASSERT_TRUE(arena->trim());
  EXPECT_TRUE(test::views_match_state(*arena));
  EXPECT_TRUE(test::audit_arena(*arena));
}

TEST(DualMapStrict, CodeHeapPagesAreNeverWritableOnceSealed) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::dual_map);
  Result<Arena> arena = Arena::create(dual_options());
  ASSERT_TRUE(arena) << arena.error().to_string();
  Result<CodeHeap> heap = CodeHeap::create(*arena);
  ASSERT_TRUE(heap) << heap.error().to_string();
  std::vector<const void*> fns;
  for (int i = 0; i < 100; ++i) {
    Result<Function> f = heap->allocate(40);
    ASSERT_TRUE(f) << f.error().to_string();
    write_fn(f->rw, static_cast<std::uint32_t>(i));
    fns.push_back(f->rx);
    if (i == 49) {
      ASSERT_TRUE(heap->publish());
      EXPECT_TRUE(test::views_match_state(*arena));
    }
  }
  // Half published, half pending: the pending page shares nothing writable
  // with the sealed ones (a page is sealed whole).
  EXPECT_TRUE(test::views_match_state(*arena));
  ASSERT_TRUE(heap->publish());
  EXPECT_TRUE(test::views_match_state(*arena));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(call(fns[i]), i);
  EXPECT_TRUE(test::audit_arena(*arena));
}

// The oracle itself: a writable view of a sealed chunk's pages, mapped
// behind the arena's back through its memfd, must be seen by the checks.
TEST(DualMapStrict, TheCheckSeesAStrayWritableView) {
  WXA_SKIP_IF_UNAVAILABLE(Backend::dual_map);
  Result<Arena> arena = Arena::create(dual_options());
  ASSERT_TRUE(arena) << arena.error().to_string();
  Result<Chunk> c = arena->allocate(arena->page_size());
  ASSERT_TRUE(c);
  ASSERT_TRUE(arena->seal(*c));
  const std::uint64_t inode = test::arena_memfd_inode(*arena);
  ASSERT_NE(inode, 0u);
  const std::uint64_t off = offset_of(*arena, c->rx());
  ASSERT_FALSE(test::memfd_view_with(inode, off, off + c->size(), 'w'));
  ASSERT_TRUE(test::views_match_state(*arena));

  // Find the arena's memfd among this process's descriptors.
  int fd = -1;
  for (int i = 0; i < 1024 && fd < 0; ++i) {
    struct stat st;
    char link[64], target[256] = {};
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", i);
    const ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n > 0 && std::strncmp(target, "/memfd:wxarena", 14) == 0 &&
        ::fstat(i, &st) == 0 && st.st_ino == inode)
      fd = i;
  }
  ASSERT_GE(fd, 0) << "the arena's memfd is not among the descriptors";
  void* stray = ::mmap(nullptr, c->size(), PROT_READ | PROT_WRITE, MAP_SHARED,
                       fd, static_cast<off_t>(off));
  ASSERT_NE(stray, MAP_FAILED);
  EXPECT_TRUE(test::memfd_view_with(inode, off, off + c->size(), 'w'));
  EXPECT_FALSE(test::views_match_state(*arena));
  // (audit_arena() checks the protection of the arena's own two views; a
  // stray view elsewhere is what the offset check above is for.)
  ASSERT_EQ(::munmap(stray, c->size()), 0);
  EXPECT_TRUE(test::views_match_state(*arena));
  EXPECT_TRUE(test::audit_arena(*arena));
}

}  // namespace
}  // namespace wxa
