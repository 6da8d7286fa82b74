// The replacement operator new/delete behind failing_allocator.hpp. State is a handful of atomics
// and a fixed table (no allocation inside the allocator); it lives in the test executable only.
#include "failing_allocator.hpp"

#include <execinfo.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace kiln_test {
namespace {

enum Mode : int { kOff, kAtIndex, kAtNewSite };

std::atomic<uint64_t> g_calls{0};
std::atomic<int64_t> g_live{0};
std::atomic<int> g_mode{kOff};
std::atomic<uint64_t> g_target{0};
std::atomic<bool> g_persistent{false};
std::atomic<bool> g_failing{false};  // a persistent fault has fired: fail everything
std::atomic<bool> g_fired{false};
std::atomic<uintptr_t> g_last_site{0};
const bool g_trace = std::getenv("KILN_TEST_FAULT_TRACE") != nullptr;

// Call sites already failed: an open-addressing set of return addresses. Far more slots than the
// few thousand sites a load reaches; a full table stops adding (those sites then never fail).
constexpr size_t kSiteSlots = size_t{1} << 16;
std::atomic<uintptr_t> g_sites[kSiteSlots];

// Code whose allocations must not fail (never_fail_within); set up before any fault is armed.
constexpr size_t kMaxExempt = 16;
std::atomic<size_t> g_n_exempt{0};
uintptr_t g_exempt_begin[kMaxExempt], g_exempt_end[kMaxExempt];
std::atomic<uint64_t> g_skipped{0};

// Whether a frame of the current stack lies in exempt code. backtrace() unwinds through the
// .eh_frame tables (no frame pointers needed); it is only called when a fault is about to fire.
bool called_from_exempt_code() {
  const size_t n_exempt = g_n_exempt.load();
  if (n_exempt == 0) return false;
  void* frames[24];
  const int depth = backtrace(frames, 24);
  for (int f = 1; f < depth; ++f) {
    const auto pc = reinterpret_cast<uintptr_t>(frames[f]);
    for (size_t i = 0; i < n_exempt; ++i) {
      if (pc > g_exempt_begin[i] && pc <= g_exempt_end[i]) return true;
    }
  }
  return false;
}

size_t slot_of(uintptr_t site) { return (site * 0x9E3779B97F4A7C15ull >> 48) % kSiteSlots; }

bool site_known(uintptr_t site) {
  for (size_t i = slot_of(site), n = 0; n < kSiteSlots; i = (i + 1) % kSiteSlots, ++n) {
    const uintptr_t v = g_sites[i].load(std::memory_order_relaxed);
    if (v == site) return true;
    if (v == 0) return false;
  }
  return true;
}

void remember_site(uintptr_t site) {
  for (size_t i = slot_of(site), n = 0; n < kSiteSlots; i = (i + 1) % kSiteSlots, ++n) {
    uintptr_t expected = 0;
    if (g_sites[i].compare_exchange_strong(expected, site) || expected == site) return;
  }
}

// Decides whether this allocation fails; at most one fault fires per arm.
bool should_fail(const void* caller) {
  const uint64_t index = g_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  if (g_failing.load(std::memory_order_relaxed)) {
    if (!called_from_exempt_code()) return true;
    g_skipped.fetch_add(1);
    return false;
  }
  int mode = g_mode.load(std::memory_order_relaxed);
  if (mode == kOff) return false;
  const auto site = reinterpret_cast<uintptr_t>(caller);
  const bool hit = mode == kAtIndex ? index == g_target.load() : !site_known(site);
  if (!hit) return false;
  if (called_from_exempt_code()) {
    // Not here: an index fault moves on to the next allocation, a site fault stays armed.
    if (mode == kAtIndex) g_target.store(index + 1);
    g_skipped.fetch_add(1);
    return false;
  }
  if (!g_mode.compare_exchange_strong(mode, kOff)) return false;
  if (mode == kAtNewSite) remember_site(site);
  g_fired.store(true);
  g_last_site.store(site);
  if (g_trace) {
    // KILN_TEST_FAULT_TRACE=1: the stack of every injected fault on stderr (then addr2line).
    void* frames[32];
    backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
    write(2, "----\n", 5);
  }
  if (g_persistent.load()) g_failing.store(true);
  return true;
}

void* allocate(size_t n, size_t align, const void* caller, bool nothrow) {
  if (should_fail(caller)) {
    if (nothrow) return nullptr;
    throw std::bad_alloc();
  }
  if (n == 0) n = 1;
  void* p = nullptr;
  if (align <= alignof(std::max_align_t)) {
    p = std::malloc(n);
  } else if (posix_memalign(&p, align, n) != 0) {
    p = nullptr;
  }
  if (!p) {
    if (nothrow) return nullptr;
    throw std::bad_alloc();
  }
  g_live.fetch_add(1, std::memory_order_relaxed);
  return p;
}

void release(void* p) noexcept {
  if (!p) return;
  g_live.fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}

void arm(Mode mode, uint64_t target, FailFor duration) {
  g_mode.store(kOff);
  g_failing.store(false);
  g_fired.store(false);
  g_persistent.store(duration == FailFor::kPersistent);
  g_target.store(target);
  g_mode.store(mode);
}

}  // namespace

void fail_allocation_at(uint64_t n, FailFor duration) {
  arm(kAtIndex, g_calls.load() + n, duration);
}
void fail_next_new_site(FailFor duration) { arm(kAtNewSite, 0, duration); }
void disarm_allocation_faults() {
  g_mode.store(kOff);
  g_failing.store(false);
}
bool allocation_fault_fired() { return g_fired.load(); }
void forget_failed_sites() {
  for (auto& s : g_sites) s.store(0);
}
void never_fail_within(uintptr_t begin, uintptr_t end) {
  const size_t i = g_n_exempt.load();
  if (i == kMaxExempt) std::abort();
  g_exempt_begin[i] = begin;
  g_exempt_end[i] = end;
  g_n_exempt.store(i + 1);
}
uintptr_t last_fault_site() { return g_last_site.load(); }
uint64_t skipped_faults() { return g_skipped.load(); }
uint64_t allocation_count() { return g_calls.load(); }
int64_t live_allocations() { return g_live.load(); }

}  // namespace kiln_test

using kiln_test::allocate;
using kiln_test::release;

// __builtin_return_address(0) must be taken in the replaced function itself: it is the code that
// called operator new.
void* operator new(size_t n) { return allocate(n, 0, __builtin_return_address(0), false); }
void* operator new[](size_t n) { return allocate(n, 0, __builtin_return_address(0), false); }
void* operator new(size_t n, std::align_val_t a) {
  return allocate(n, static_cast<size_t>(a), __builtin_return_address(0), false);
}
void* operator new[](size_t n, std::align_val_t a) {
  return allocate(n, static_cast<size_t>(a), __builtin_return_address(0), false);
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return allocate(n, 0, __builtin_return_address(0), true);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return allocate(n, 0, __builtin_return_address(0), true);
}
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<size_t>(a), __builtin_return_address(0), true);
}
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<size_t>(a), __builtin_return_address(0), true);
}

void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, size_t) noexcept { release(p); }
void operator delete[](void* p, size_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
