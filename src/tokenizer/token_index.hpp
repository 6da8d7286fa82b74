// TokenIndex: a vocabulary's token strings and ids. Every string lives in one byte arena; string →
// id is a flat open-addressing table of 16-byte slots, id → string an array of arena spans.
// Loading a 200k-token vocabulary and its 450k merges does about 1.5 million lookups, and a
// node-based std::unordered_map<std::string, int> spends most of the load time chasing pointers
// there (one bucket, one node, one heap string per probe); here a probe touches one slot and the
// arena bytes.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::tok {

class TokenIndex {
 public:
  void reserve(size_t n_tokens, size_t n_bytes);
  // A later insert of the same string replaces its id (a JSON object with a repeated key keeps
  // the last value). Throws KILN_ERR_FORMAT when the arena would pass 4 GiB.
  void insert(std::string_view token, int32_t id);
  // insert() of each entry in order, with the home slots of a batch prefetched first: a vocabulary
  // of 150k tokens is 150k cache misses into the table, and overlapping them halves the build.
  void insert_many(const std::pair<std::string_view, int32_t>* entries, size_t n);

  std::optional<int32_t> find(std::string_view token) const {
    if (slots_.empty()) return std::nullopt;
    const uint64_t h = hash(token);
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.id < 0) return std::nullopt;
      if (slot.tag == tag && slot.length == token.size() &&
          std::memcmp(arena_.data() + slot.offset, token.data(), token.size()) == 0) {
        return slot.id;
      }
    }
  }

  // find() for many keys at once (-1 for a missing one). Loading a vocabulary's merges does one
  // lookup per token of each merge, almost all of them cache misses: here every key's slot is
  // prefetched before the first is probed, then every candidate's arena bytes before the first is
  // compared, so the misses overlap instead of queueing (about 3x faster on 450k merges).
  void find_many(const std::string_view* keys, size_t n, int32_t* ids) const;

  size_t size() const { return size_; }
  int32_t max_id() const { return max_id_; }  // after index_ids()

  // Builds the id → string spans (call once after the last insert).
  void index_ids();
  // The string of `id`, or nullopt for an id no token has. Valid while the index lives.
  std::optional<std::string_view> token(int32_t id) const {
    if (id < 0 || static_cast<size_t>(id) >= by_id_.size() || by_id_[id].offset == kNoToken) {
      return std::nullopt;
    }
    return std::string_view(arena_.data() + by_id_[id].offset, by_id_[id].length);
  }

 private:
  static constexpr uint32_t kNoToken = ~uint32_t{0};
  struct Slot {
    uint32_t tag = 0;     // upper half of the hash: most mismatches never touch the arena
    int32_t id = -1;      // -1 = empty slot
    uint32_t offset = 0;  // into arena_
    uint32_t length = 0;
  };
  struct Span {
    uint32_t offset = kNoToken;
    uint32_t length = 0;
  };
  // Tokens are short (most under 8 bytes) and a load hashes ~600k of them; std::hash (murmur2
  // over bytes, 12 % of a load's instructions under callgrind) spends most of its work on the
  // tail loop. Here: 8-byte words, the 1..7-byte tail as overlapping loads, the length mixed
  // in, and murmur3's 64-bit finalizer so that both the low bits (the slot) and the high bits
  // (the tag) depend on every byte.
  static uint64_t hash(std::string_view s) {
    const char* p = s.data();
    size_t n = s.size();
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (static_cast<uint64_t>(n) * 0xff51afd7ed558ccdULL);
    for (; n >= 8; p += 8, n -= 8) {
      uint64_t word;
      std::memcpy(&word, p, 8);
      h = (h ^ word) * 0xc4ceb9fe1a85ec53ULL;
      h ^= h >> 29;
    }
    uint64_t tail = 0;
    if (n >= 4) {  // bytes [0, 4) and [n - 4, n): together every byte of a 4..7-byte tail
      uint32_t head, end;
      std::memcpy(&head, p, 4);
      std::memcpy(&end, p + n - 4, 4);
      tail = (static_cast<uint64_t>(head) << 32) | end;
    } else if (n > 0) {  // 1..3 bytes: first, middle, last
      tail = (static_cast<uint64_t>(static_cast<uint8_t>(p[0])) << 16) |
             (static_cast<uint64_t>(static_cast<uint8_t>(p[n / 2])) << 8) |
             static_cast<uint8_t>(p[n - 1]);
    }
    h ^= tail;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
  }
  // Slots for n tokens at a load factor of at most 3/4: linear probing with 32-bit tags stays
  // short there, and the table is half the size (and half the page faults of a first load) of
  // one kept at 1/2.
  static size_t capacity_for(size_t n) {
    return std::bit_ceil(std::max<size_t>(16, n + n / 3 + 1));
  }
  void grow();
  void insert_hashed(std::string_view token, int32_t id, uint64_t h);

  std::string arena_;
  std::vector<Slot> slots_;
  std::vector<Span> by_id_;
  size_t mask_ = 0;
  size_t size_ = 0;
  int32_t max_id_ = -1;
};

}  // namespace kiln::tok
