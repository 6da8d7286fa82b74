// A replacement of the global operator new/delete that a test can tell to fail, for injecting
// out-of-memory into libkiln. It is linked into the fault-injection test executable only: the
// library's references to operator new are undefined symbols of libkiln.so, and the dynamic
// linker binds them to the executable's definition first (ELF symbol interposition), so every C++
// allocation the library makes comes through here while the library itself carries no hook.
//
// Two ways to choose the allocation that fails:
//  - by index: the n-th allocation after arming;
//  - by call site: the first allocation whose caller (the return address of operator new) has not
//    been failed before. Repeating a call with this until it completes reaches every call site it
//    allocates from (the allocator code libstdc++ inlines into the library is one site per
//    instantiation; std::string's out-of-line growth is one site shared by all strings).
// And how long the failure lasts:
//  - once: that one allocation fails, later ones succeed (a transient failure);
//  - persistent: that one and every later one fail until disarm(), like memory that stays
//    exhausted, so the library's error path (building the message) also runs out of memory.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln_test {

enum class FailFor { kOnce, kPersistent };

// Arms a fault at the n-th allocation from now (n >= 1).
void fail_allocation_at(uint64_t n, FailFor duration);
// Arms a fault at the first allocation from a call site not failed before.
void fail_next_new_site(FailFor duration);
// Stops failing (also ends a persistent failure). Call it before checking results.
void disarm_allocation_faults();
// Whether a fault fired since the last arm.
bool allocation_fault_fired();
// Forgets the call sites already failed.
void forget_failed_sites();
// Allocations made by code in [begin, end) — directly or through the functions it calls (the
// whole stack is checked, by unwinding, whenever a fault is about to fire) — never fail. For
// third-party code known to terminate on a failed allocation, so that the rest can be tested.
void never_fail_within(uintptr_t begin, uintptr_t end);
// The return address of the allocation that failed last (for messages).
uintptr_t last_fault_site();
// Faults that were about to fire and were skipped because of never_fail_within.
uint64_t skipped_faults();

// Every operator new call since the process started (successful or not).
uint64_t allocation_count();
// Allocations made and not yet freed.
int64_t live_allocations();

}  // namespace kiln_test
