#include "tokenizer/token_index.hpp"

#include <algorithm>
#include <bit>

#include "core/error.hpp"

namespace kiln::tok {

void TokenIndex::reserve(size_t n_tokens, size_t n_bytes) {
  arena_.reserve(n_bytes);
  const size_t capacity = capacity_for(n_tokens);
  if (capacity > slots_.size()) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    size_ = 0;
    for (const Slot& slot : old) {
      if (slot.id >= 0) {
        const uint64_t h =
            hash(std::string_view(arena_.data() + slot.offset, slot.length));  // re-place
        for (size_t i = h & mask_;; i = (i + 1) & mask_) {
          if (slots_[i].id < 0) {
            slots_[i] = slot;
            ++size_;
            break;
          }
        }
      }
    }
  }
}

void TokenIndex::grow() { reserve(std::max<size_t>(16, slots_.size()), arena_.size()); }

void TokenIndex::insert(std::string_view token, int32_t id) {
  if (capacity_for(size_ + 1) > slots_.size()) grow();
  insert_hashed(token, id, hash(token));
}

void TokenIndex::insert_many(const std::pair<std::string_view, int32_t>* entries, size_t n) {
  constexpr size_t kBatch = 32;
  uint64_t hashes[kBatch];
  for (size_t base = 0; base < n; base += kBatch) {
    const size_t m = std::min(kBatch, n - base);
    // Room for the whole batch first, so that no slot prefetched below moves.
    if (capacity_for(size_ + m) > slots_.size()) reserve(size_ + m, arena_.size());
    for (size_t k = 0; k < m; ++k) {
      hashes[k] = hash(entries[base + k].first);
      __builtin_prefetch(&slots_[hashes[k] & mask_], 1);
    }
    for (size_t k = 0; k < m; ++k) {
      insert_hashed(entries[base + k].first, entries[base + k].second, hashes[k]);
    }
  }
}

void TokenIndex::insert_hashed(std::string_view token, int32_t id, uint64_t h) {
  const auto tag = static_cast<uint32_t>(h >> 32);
  for (size_t i = h & mask_;; i = (i + 1) & mask_) {
    Slot& slot = slots_[i];
    if (slot.id < 0) {
      if (arena_.size() + token.size() >= kNoToken) {
        fail(KILN_ERR_FORMAT, "tokenizer vocabulary holds more than 4 GiB of token text");
      }
      slot = {tag, id, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(token.size())};
      arena_.append(token);
      ++size_;
      break;
    }
    if (slot.tag == tag && slot.length == token.size() &&
        std::memcmp(arena_.data() + slot.offset, token.data(), token.size()) == 0) {
      slot.id = id;
      break;
    }
  }
}

void TokenIndex::find_many(const std::string_view* keys, size_t n, int32_t* ids) const {
  constexpr size_t kBatch = 64;
  uint64_t hashes[kBatch];
  int64_t candidate[kBatch];  // slot of a tag match still to compare, or -1
  for (size_t base = 0; base < n; base += kBatch) {
    const size_t m = std::min(kBatch, n - base);
    for (size_t k = 0; k < m; ++k) {
      hashes[k] = hash(keys[base + k]);
      if (!slots_.empty()) __builtin_prefetch(&slots_[hashes[k] & mask_]);
    }
    for (size_t k = 0; k < m; ++k) {
      ids[base + k] = -1;
      candidate[k] = -1;
      if (slots_.empty()) continue;
      const std::string_view key = keys[base + k];
      const auto tag = static_cast<uint32_t>(hashes[k] >> 32);
      for (size_t i = hashes[k] & mask_;; i = (i + 1) & mask_) {
        const Slot& slot = slots_[i];
        if (slot.id < 0) break;
        if (slot.tag == tag && slot.length == key.size()) {
          candidate[k] = static_cast<int64_t>(i);
          __builtin_prefetch(arena_.data() + slot.offset);
          break;
        }
      }
    }
    for (size_t k = 0; k < m; ++k) {
      if (candidate[k] < 0) continue;
      const Slot& slot = slots_[static_cast<size_t>(candidate[k])];
      const std::string_view key = keys[base + k];
      if (std::memcmp(arena_.data() + slot.offset, key.data(), key.size()) == 0) {
        ids[base + k] = slot.id;
      } else {
        // A 32-bit tag collision (rare): the key may sit further along the probe sequence.
        ids[base + k] = find(key).value_or(-1);
      }
    }
  }
}

void TokenIndex::index_ids() {
  max_id_ = -1;
  for (const Slot& slot : slots_) max_id_ = std::max(max_id_, slot.id);
  by_id_.assign(static_cast<size_t>(max_id_ + 1), Span{});
  for (const Slot& slot : slots_) {
    if (slot.id >= 0) by_id_[slot.id] = {slot.offset, slot.length};
  }
}

}  // namespace kiln::tok
