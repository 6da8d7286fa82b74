#include "train/data_parallel/grad_buckets.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string_view>

#include "core/error.hpp"
#include "train/model_layout.hpp"

namespace kiln::train {

namespace {

std::string n_str(int64_t v) { return std::to_string(v); }

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// The point after which tensor `name` is never written again (the header's table).
GradPoint point_of(const ModelConfig& c, const std::string& name) {
  if (name == "model.embed_tokens.weight" || name == "model.embed_positions.weight") {
    return {GradPointKind::Embedding, -1};
  }
  if (name == "lm_head.weight") return {GradPointKind::HeadOutputs, -1};
  if (starts_with(name, "model.norm.")) {
    return {c.embed_norm ? GradPointKind::Embedding : GradPointKind::HeadOutputs, -1};
  }
  for (int32_t b = 0; b < c.n_layers + c.n_mtp_heads; ++b) {
    const std::string prefix =
        b < c.n_layers ? layer_prefix(b) : mtp_head_prefix(b - c.n_layers + 1);
    if (!starts_with(name, prefix)) continue;
    const std::string_view rest = std::string_view(name).substr(prefix.size());
    const bool mlp = starts_with(rest, "post_attention_layernorm.") || starts_with(rest, "mlp.");
    return {mlp ? GradPointKind::BlockMlp : GradPointKind::BlockAttention, b};
  }
  fail(KILN_ERR_INTERNAL, "gradient buckets: tensor '" + name +
                              "' has no place in the backward order (grad_buckets.hpp)");
}

// A run of consecutive tensors that become final at one point.
struct Piece {
  int32_t first = 0, end = 0;   // tensor indices
  int64_t begin = 0, stop = 0;  // elements, padding included
  int32_t point = 0;
};

}  // namespace

std::string grad_point_name(const GradPoint& p) {
  switch (p.kind) {
    case GradPointKind::HeadOutputs:
      return "HeadOutputs";
    case GradPointKind::BlockMlp:
      return "BlockMlp " + n_str(p.block);
    case GradPointKind::BlockAttention:
      return "BlockAttention " + n_str(p.block);
    case GradPointKind::Embedding:
      return "Embedding";
  }
  return "unknown";
}

std::vector<GradPoint> backward_grad_points(const ModelConfig& c) {
  std::vector<GradPoint> points;
  const int32_t heads = 1 + c.n_mtp_heads;
  for (int32_t h = 0; h < heads; ++h) {
    if (h == heads - 1) points.push_back({GradPointKind::HeadOutputs, -1});
    const int32_t block = h == 0 ? c.n_layers - 1 : c.n_layers + h - 1;
    points.push_back({GradPointKind::BlockMlp, block});
    points.push_back({GradPointKind::BlockAttention, block});
  }
  for (int32_t l = c.n_layers - 2; l >= 0; --l) {
    points.push_back({GradPointKind::BlockMlp, l});
    points.push_back({GradPointKind::BlockAttention, l});
  }
  points.push_back({GradPointKind::Embedding, -1});
  return points;
}

GradBucketPlan::GradBucketPlan(const ModelConfig& c, const ParamLayout& layout, int64_t cap_bytes)
    : points_(backward_grad_points(c)), cap_bytes_(cap_bytes) {
  if (cap_bytes < 1) {
    fail(KILN_ERR_INVALID_ARGUMENT,
         "gradient buckets: the target size is " + n_str(cap_bytes) + " bytes (must be >= 1)");
  }
  const auto& specs = layout.specs();
  const auto n = static_cast<int32_t>(specs.size());
  const auto elem_end = [&](int32_t i) { return i + 1 < n ? specs[i + 1].offset : layout.total(); };
  const auto bytes = [](int64_t lo, int64_t hi) {
    return (hi - lo) * static_cast<int64_t>(sizeof(float));
  };

  // Each tensor's point, then each point's tensors as runs of consecutive indices.
  std::vector<int32_t> point(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    const GradPoint p = point_of(c, specs[i].name);
    const auto it = std::find(points_.begin(), points_.end(), p);
    if (it == points_.end()) {
      fail(KILN_ERR_INTERNAL, "gradient buckets: tensor '" + specs[i].name + "' maps to " +
                                  grad_point_name(p) + ", which the backward pass never reaches");
    }
    point[i] = static_cast<int32_t>(it - points_.begin());
  }
  std::vector<Piece> pieces;
  for (int32_t p = 0; p < static_cast<int32_t>(points_.size()); ++p) {
    for (int32_t i = 0; i < n; ++i) {
      if (point[i] != p) continue;
      if (!pieces.empty() && pieces.back().point == p && pieces.back().end == i) {
        pieces.back().end = i + 1;
        pieces.back().stop = elem_end(i);
      } else {
        pieces.push_back({i, i + 1, specs[i].offset, elem_end(i), p});
      }
    }
  }

  // Greedy in backward order: a piece joins the open bucket when the union stays one range and
  // within the cap; a piece over the cap is cut into runs of whole tensors (a tensor over the cap
  // alone), all released at the piece's point.
  std::optional<GradBucket> open;
  const auto close = [&] {
    if (open) buckets_.push_back(*open);
    open.reset();
  };
  for (const Piece& piece : pieces) {
    if (bytes(piece.begin, piece.stop) > cap_bytes) {
      close();
      for (int32_t i = piece.first; i < piece.end; ++i) {
        const int64_t lo = specs[i].offset, hi = elem_end(i);
        if (open && bytes(open->begin, hi) <= cap_bytes) {
          open->end = hi;
          open->end_param = i + 1;
        } else {
          close();
          open = GradBucket{lo, hi, i, i + 1, piece.point};
        }
      }
      close();
      continue;
    }
    if (open) {
      const bool after = open->end == piece.begin, before = piece.stop == open->begin;
      const int64_t lo = before ? piece.begin : open->begin, hi = after ? piece.stop : open->end;
      if ((after || before) && bytes(lo, hi) <= cap_bytes) {
        open->begin = lo, open->end = hi;
        open->first_param = std::min(open->first_param, piece.first);
        open->end_param = std::max(open->end_param, piece.end);
        open->ready_point = piece.point;
        continue;
      }
    }
    close();
    open = GradBucket{piece.begin, piece.stop, piece.first, piece.end, piece.point};
  }
  close();

  by_begin_.resize(buckets_.size());
  for (size_t i = 0; i < by_begin_.size(); ++i) by_begin_[i] = static_cast<int32_t>(i);
  std::sort(by_begin_.begin(), by_begin_.end(),
            [&](int32_t a, int32_t b) { return buckets_[a].begin < buckets_[b].begin; });
}

int32_t GradBucketPlan::bucket_of(int64_t offset) const {
  const auto it = std::upper_bound(
      by_begin_.begin(), by_begin_.end(), offset,
      [&](int64_t off, int32_t b) { return off < buckets_[static_cast<size_t>(b)].begin; });
  if (it == by_begin_.begin() || offset >= buckets_[static_cast<size_t>(*(it - 1))].end) {
    fail(KILN_ERR_INTERNAL, "gradient buckets: element " + n_str(offset) + " lies in no bucket");
  }
  return *(it - 1);
}

void GradBucketCursor::start() {
  next_point_ = 0;
  released_ = 0;
}

std::pair<int32_t, int32_t> GradBucketCursor::reach(const GradPoint& point) {
  const auto& points = plan_.points();
  if (next_point_ >= static_cast<int32_t>(points.size()) || !(points[next_point_] == point)) {
    const std::string expected = next_point_ < static_cast<int32_t>(points.size())
                                     ? grad_point_name(points[next_point_])
                                     : std::string("the end of the backward pass");
    fail(KILN_ERR_INTERNAL, "gradient buckets: the backward pass reached " +
                                grad_point_name(point) + " where the plan expects " + expected);
  }
  const int32_t first = released_;
  const auto& buckets = plan_.buckets();
  while (released_ < static_cast<int32_t>(buckets.size()) &&
         buckets[released_].ready_point <= next_point_) {
    ++released_;
  }
  ++next_point_;
  return {first, released_};
}

void GradBucketCursor::check_writable(int64_t offset) const {
  const int32_t b = plan_.bucket_of(offset);
  if (b < released_) {
    fail(KILN_ERR_INTERNAL,
         "gradient buckets: a gradient at element " + n_str(offset) +
             " is written after its bucket " + n_str(b) + " was handed to the all-reduce (at " +
             grad_point_name(plan_.points()[plan_.buckets()[b].ready_point]) + ")");
  }
}

int64_t grad_bucket_bytes_from_env(const char* value) {
  if (value == nullptr || *value == '\0') return GradBucketPlan::kDefaultBytes;
  const auto refuse = [&] {
    fail(KILN_ERR_INVALID_ARGUMENT,
         std::string("KILN_DP_BUCKET_MB is '") + value +
             "': expected a number of MiB >= 0 (0 = one all-reduce after the backward pass)");
  };
  errno = 0;
  char* end = nullptr;
  const double mib = std::strtod(value, &end);
  if (end == value || *end != '\0' || errno != 0 || !std::isfinite(mib) || mib < 0.0 || mib > 1e6) {
    refuse();
  }
  if (mib == 0.0) return 0;
  return std::max<int64_t>(1, std::llround(mib * 1048576.0));
}

}  // namespace kiln::train
