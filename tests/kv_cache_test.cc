// Tests for qkern/kv: kv_format.h, block_pool.h and paged_kv_cache.h.
//
// The core is a randomized test that drives PagedKvCache with thousands of
// operations next to a plain model (float K/V per sequence) and checks every
// stored value and the pool's accounting after every step.
//
// Error bounds of the storage formats, per element x and stored value d:
//  - f32: d == x.
//  - f16: round to nearest even with 10 fraction bits. For |x| >= 2^-14
//    (normal) the error is at most half an ulp, <= 2^-11 |x|; below, the
//    spacing is 2^-24 and the error <= 2^-25. Decoding is exact. So
//    |d - x| <= 2^-11 |x| + 2^-25.
//  - int8 (row of amax >= kKvInt8MinAmax): let u = 2^-24, s = amax / 127
//    exactly, S = fl(s) the stored scale, r = fl(127 / amax). The code is
//    q = rne(y) with y = fl(x * r) = (x / s)(1 + e1)(1 + e2), |ei| <= u, and
//    |x / s| <= 127, so |y - x / s| <= 127 (2u + u^2) and
//    |q - x / s| <= 1/2 + 254u + 127u^2 (the clamp to +-127 never moves q
//    away from x / s, which lies in [-127, 127]). The decoded value is
//    d = fl(S * q) = s q (1 + e3)(1 + e4), so |d - s q| <= 127 s (2u + u^2).
//    Together |d - x| <= s (1/2 + 508u + 254u^2), and with s <= S / (1 - u)
//    this is below S (1/2 + 512u) = S (1/2 + 2^-15). S and r are normal and
//    finite because amax >= 127 FLT_MIN; a product x * r that underflows
//    adds at most 2^-150 to y, far inside the slack.
//  - int8 row with amax < kKvInt8MinAmax: stored as zeros, |d - x| <= amax.
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qkern/kv/block_pool.h"
#include "qkern/kv/kv_format.h"
#include "qkern/kv/paged_kv_cache.h"
#include "status_matchers.h"
#include "test_util.h"

namespace qkern {
namespace {

using test::ExpectError;
using test::Mentions;

// Bound on |stored - x| for one value of a row with absolute maximum `amax`.
double ErrorBound(KvFormat format, float x, float amax) {
  switch (format) {
    case KvFormat::kF32:
      return 0.0;
    case KvFormat::kF16:
      return std::ldexp(std::fabs(static_cast<double>(x)), -11) +
             std::ldexp(1.0, -25);
    case KvFormat::kInt8: {
      if (amax < kKvInt8MinAmax) return amax;
      const float scale = amax / 127.0f;
      return static_cast<double>(scale) * (0.5 + std::ldexp(1.0, -15));
    }
  }
  return 0.0;
}

// Rows with varied magnitudes: most gaussian at a random scale, some with an
// outlier, some all zero, and (for the format edge cases) some tiny enough to
// be f16 subnormals or below the int8 amax floor.
class RowSource {
 public:
  explicit RowSource(uint32_t seed) : rng_(seed) {}

  void Fill(float* row, size_t n) {
    std::uniform_int_distribution<int> kind(0, 19);
    const int k = kind(rng_);
    if (k == 0) {
      std::fill(row, row + n, 0.0f);
      return;
    }
    std::uniform_real_distribution<float> exponent(-3.0f, 2.5f);
    float magnitude = std::pow(10.0f, exponent(rng_));
    if (k == 1) magnitude = 1e-6f;   // f16 subnormal range
    if (k == 2) magnitude = 1e-37f;  // below the int8 amax floor
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (size_t i = 0; i < n; ++i) row[i] = normal(rng_) * magnitude;
    if (k == 3) row[rng_() % n] = magnitude * 40.0f;
  }

  std::mt19937& rng() { return rng_; }

 private:
  std::mt19937 rng_;
};

// One token of the model: K and V for every layer, each
// [layer][kv_head][head_dim], with the error bound of every element.
struct Token {
  std::vector<float> k, v;
  std::vector<double> k_bound, v_bound;
};

Token MakeToken(const KvCacheConfig& c, RowSource* source) {
  const size_t n = c.num_layers * c.num_kv_heads * c.head_dim;
  Token t;
  t.k.resize(n);
  t.v.resize(n);
  t.k_bound.resize(n);
  t.v_bound.resize(n);
  for (size_t row = 0; row < c.num_layers * c.num_kv_heads; ++row) {
    for (int part = 0; part < 2; ++part) {
      float* x = (part == 0 ? t.k : t.v).data() + row * c.head_dim;
      double* bound =
          (part == 0 ? t.k_bound : t.v_bound).data() + row * c.head_dim;
      source->Fill(x, c.head_dim);
      float amax = 0.0f;
      for (size_t i = 0; i < c.head_dim; ++i) {
        amax = std::max(amax, std::fabs(x[i]));
      }
      for (size_t i = 0; i < c.head_dim; ++i) {
        bound[i] = ErrorBound(c.format, x[i], amax);
      }
    }
  }
  return t;
}

Status WriteToken(PagedKvCache* cache, KvSeqId seq, size_t pos,
                  const Token& t) {
  const size_t row = cache->RowFloats();
  for (size_t layer = 0; layer < cache->config().num_layers; ++layer) {
    QKERN_RETURN_IF_ERROR(cache->WriteKV(
        seq, layer, pos, t.k.data() + layer * row, t.v.data() + layer * row));
  }
  return Status::Ok();
}

// Reserves, writes and commits `tokens` at the end of `seq`.
Status Append(PagedKvCache* cache, KvSeqId seq,
              const std::vector<Token>& tokens) {
  size_t length;
  QKERN_RETURN_IF_ERROR(cache->Length(seq, &length));
  QKERN_RETURN_IF_ERROR(cache->ReserveTokens(seq, tokens.size()));
  for (size_t i = 0; i < tokens.size(); ++i) {
    QKERN_RETURN_IF_ERROR(WriteToken(cache, seq, length + i, tokens[i]));
  }
  return cache->CommitTokens(seq, tokens.size());
}

// Compares one position of the cache with the model, within the bounds.
::testing::AssertionResult TokenMatches(const PagedKvCache& cache, KvSeqId seq,
                                        size_t pos, const Token& t) {
  const size_t row = cache.RowFloats();
  std::vector<float> k(row), v(row);
  for (size_t layer = 0; layer < cache.config().num_layers; ++layer) {
    const Status status = cache.ReadKV(seq, layer, pos, k.data(), v.data());
    if (!status.ok()) {
      return ::testing::AssertionFailure()
             << "ReadKV(seq " << seq << ", layer " << layer << ", pos " << pos
             << "): " << status.message();
    }
    for (size_t i = 0; i < row; ++i) {
      const size_t j = layer * row + i;
      const double k_err = std::fabs(static_cast<double>(k[i]) - t.k[j]);
      const double v_err = std::fabs(static_cast<double>(v[i]) - t.v[j]);
      if (!(k_err <= t.k_bound[j]) || !(v_err <= t.v_bound[j])) {
        return ::testing::AssertionFailure()
               << "seq " << seq << " layer " << layer << " pos " << pos
               << " index " << i << ": k " << k[i] << " vs " << t.k[j]
               << " (bound " << t.k_bound[j] << "), v " << v[i] << " vs "
               << t.v[j] << " (bound " << t.v_bound[j] << ")";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Every value the cache returns for `ids`, as bits, plus lengths and block
// tables: two equal snapshots mean nothing observable changed.
std::vector<uint32_t> Snapshot(const PagedKvCache& cache,
                               const std::vector<KvSeqId>& ids,
                               bool with_free_count = true) {
  std::vector<uint32_t> out;
  std::vector<float> k(cache.RowFloats()), v(cache.RowFloats());
  for (KvSeqId id : ids) {
    size_t length = 0, reserved = 0;
    EXPECT_TRUE(cache.Length(id, &length).ok());
    EXPECT_TRUE(cache.ReservedLength(id, &reserved).ok());
    out.push_back(static_cast<uint32_t>(length));
    out.push_back(static_cast<uint32_t>(reserved));
    KvBlockTable table;
    EXPECT_TRUE(cache.BlockTable(id, &table).ok());
    out.insert(out.end(), table.begin(), table.end());
    for (size_t pos = 0; pos < length; ++pos) {
      for (size_t layer = 0; layer < cache.config().num_layers; ++layer) {
        EXPECT_TRUE(cache.ReadKV(id, layer, pos, k.data(), v.data()).ok());
        for (float x : k) out.push_back(BitsFromF32(x));
        for (float x : v) out.push_back(BitsFromF32(x));
      }
    }
  }
  if (with_free_count) out.push_back(cache.num_free_blocks());
  return out;
}

// Every block is referenced exactly as often as block tables name it, and the
// free count is the total minus the blocks referenced (no leak, no double
// free).
::testing::AssertionResult PoolConsistent(const PagedKvCache& cache,
                                          const std::vector<KvSeqId>& ids) {
  std::vector<uint32_t> refs(cache.num_blocks(), 0);
  const size_t bt = cache.config().block_tokens;
  for (KvSeqId id : ids) {
    KvBlockTable table;
    size_t reserved = 0;
    if (!cache.BlockTable(id, &table).ok() ||
        !cache.ReservedLength(id, &reserved).ok()) {
      return ::testing::AssertionFailure() << "sequence " << id << " missing";
    }
    if (table.size != (reserved + bt - 1) / bt) {
      return ::testing::AssertionFailure()
             << "sequence " << id << ": " << table.size << " blocks for "
             << reserved << " reserved positions";
    }
    if (!cache.ValidateBlockTable(table.data, table.size, reserved).ok()) {
      return ::testing::AssertionFailure()
             << "sequence " << id << " has an invalid block table";
    }
    for (uint32_t block : table) ++refs[block];
  }
  size_t used = 0;
  for (uint32_t block = 0; block < cache.num_blocks(); ++block) {
    if (cache.pool().RefCount(block) != refs[block]) {
      return ::testing::AssertionFailure()
             << "block " << block << ": refcount "
             << cache.pool().RefCount(block) << ", referenced " << refs[block]
             << " times";
    }
    used += refs[block] > 0;
  }
  if (cache.num_free_blocks() != cache.num_blocks() - used) {
    return ::testing::AssertionFailure()
           << cache.num_free_blocks() << " free blocks, expected "
           << cache.num_blocks() - used;
  }
  return ::testing::AssertionSuccess();
}

KvCacheConfig SmallConfig(KvFormat format, size_t block_tokens,
                          size_t num_blocks) {
  KvCacheConfig c;
  c.num_layers = 2;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.block_tokens = block_tokens;
  c.format = format;
  KvBlockLayout layout;
  EXPECT_TRUE(KvBlockLayout::Compute(c.num_layers, c.num_kv_heads, c.head_dim,
                                     c.block_tokens, c.format, &layout)
                  .ok());
  c.memory_budget_bytes = num_blocks * layout.BlockBytes();
  return c;
}

// --- (a) randomized operations against a model ----------------------------

struct ModelSeq {
  std::vector<Token> committed;
  // Written but not committed positions, from Length on. The cache may hold
  // a longer reservation; only these are known to be written.
  std::vector<Token> pending;
};

class Fuzzer {
 public:
  Fuzzer(const KvCacheConfig& config, uint32_t seed)
      : config_(config), source_(seed) {
    const Status status = PagedKvCache::Create(config, &cache_);
    EXPECT_TRUE(status.ok()) << status.message();
  }

  void Run(int steps) {
    for (int step = 0; step < steps; ++step) {
      ASSERT_NO_FATAL_FAILURE(Step()) << "in step " << step;
      ASSERT_NO_FATAL_FAILURE(CheckAll()) << "after step " << step;
    }
    EXPECT_GT(exhausted_, 0) << "the pool was never exhausted";
    EXPECT_GT(forks_, 0);
    // Whole-block sequences never share a partly filled block.
    if (config_.block_tokens > 1) {
      EXPECT_GT(copies_on_write_, 0);
    }
  }

 private:
  static constexpr size_t kMaxSequences = 6;

  void Step() {
    const int op = Uniform(0, 99);
    if (model_.empty() || (op < 8 && model_.size() < kMaxSequences)) {
      AddOp();
    } else if (op < 55) {
      AppendOp();
    } else if (op < 62) {
      CommitPendingOp();
    } else if (op < 75) {
      TruncateOp();
    } else if (op < 88) {
      ForkOp();
    } else {
      FreeOp();
    }
  }

  int Uniform(int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(source_.rng());
  }
  KvSeqId PickSequence() {
    auto it = model_.begin();
    std::advance(it, Uniform(0, static_cast<int>(model_.size()) - 1));
    return it->first;
  }
  // Ids are sparse and some exceed 32 bits.
  KvSeqId NewId() {
    next_id_ += 1 + static_cast<KvSeqId>(Uniform(0, 3));
    return Uniform(0, 4) == 0 ? next_id_ + (KvSeqId{1} << 40) : next_id_;
  }

  void AddOp() {
    const KvSeqId id = NewId();
    ASSERT_TRUE(cache_.AddSequence(id).ok());
    model_[id];
  }

  void AppendOp() {
    const KvSeqId id = PickSequence();
    ModelSeq& m = model_[id];
    const size_t n = static_cast<size_t>(
        Uniform(1, static_cast<int>(2 * config_.block_tokens + 1)));
    size_t reserved_before, needed;
    ASSERT_TRUE(cache_.ReservedLength(id, &reserved_before).ok());
    const Status count = cache_.BlocksToReserve(id, n, &needed);
    if (!count.ok()) {
      // More tokens than the whole pool holds.
      ASSERT_EQ(count.code(), StatusCode::kResourceExhausted);
      needed = SIZE_MAX;
    }
    KvBlockTable table;
    ASSERT_TRUE(cache_.BlockTable(id, &table).ok());
    const std::vector<uint32_t> table_before(table.begin(), table.end());
    const uint32_t free_before = cache_.num_free_blocks();
    const Status status = cache_.ReserveTokens(id, n);
    if (!status.ok()) {
      // All or nothing: this sequence (and, via CheckAll, every other one)
      // is untouched.
      ASSERT_EQ(status.code(), StatusCode::kResourceExhausted)
          << status.message();
      EXPECT_GT(needed, free_before);
      ASSERT_TRUE(cache_.BlockTable(id, &table).ok());
      EXPECT_EQ(std::vector<uint32_t>(table.begin(), table.end()),
                table_before);
      size_t reserved_after;
      ASSERT_TRUE(cache_.ReservedLength(id, &reserved_after).ok());
      EXPECT_EQ(reserved_after, reserved_before);
      EXPECT_EQ(cache_.num_free_blocks(), free_before);
      ++exhausted_;
      return;
    }
    EXPECT_EQ(cache_.num_free_blocks() + needed, free_before);
    ASSERT_TRUE(cache_.BlockTable(id, &table).ok());
    for (size_t i = 0; i < std::min(table.size, table_before.size()); ++i) {
      copies_on_write_ += table[i] != table_before[i];
    }
    const size_t length = m.committed.size();
    // Layers are written in a random order, as a runtime might pipeline them.
    std::vector<size_t> layers(config_.num_layers);
    for (size_t l = 0; l < layers.size(); ++l) layers[l] = l;
    std::shuffle(layers.begin(), layers.end(), source_.rng());
    if (m.pending.size() < n) m.pending.resize(n);
    std::vector<Token> tokens(n);
    for (size_t i = 0; i < n; ++i) tokens[i] = MakeToken(config_, &source_);
    const size_t row = cache_.RowFloats();
    for (size_t layer : layers) {
      for (size_t i = 0; i < n; ++i) {
        ASSERT_TRUE(cache_
                        .WriteKV(id, layer, length + i,
                                 tokens[i].k.data() + layer * row,
                                 tokens[i].v.data() + layer * row)
                        .ok());
      }
    }
    for (size_t i = 0; i < n; ++i) m.pending[i] = tokens[i];
    // Usually commit all; sometimes part, leaving written pending positions
    // behind for later forks, truncates and commits to meet.
    const size_t commit =
        Uniform(0, 3) == 0
            ? static_cast<size_t>(Uniform(0, static_cast<int>(n)))
            : n;
    Commit(id, commit);
  }

  void CommitPendingOp() {
    const KvSeqId id = PickSequence();
    const size_t pending = model_[id].pending.size();
    Commit(id, static_cast<size_t>(Uniform(0, static_cast<int>(pending))));
  }

  void Commit(KvSeqId id, size_t n) {
    ModelSeq& m = model_[id];
    ASSERT_TRUE(cache_.CommitTokens(id, n).ok());
    m.committed.insert(m.committed.end(), m.pending.begin(),
                       m.pending.begin() + n);
    m.pending.erase(m.pending.begin(), m.pending.begin() + n);
  }

  void TruncateOp() {
    const KvSeqId id = PickSequence();
    ModelSeq& m = model_[id];
    const int length = static_cast<int>(m.committed.size());
    // Mostly short rollbacks, as in speculative decoding.
    const size_t new_length = static_cast<size_t>(
        Uniform(0, 2) == 0 ? Uniform(0, length)
                           : std::max(0, length - Uniform(0, 5)));
    ASSERT_TRUE(cache_.Truncate(id, new_length).ok());
    m.committed.resize(new_length);
    m.pending.clear();
  }

  void ForkOp() {
    if (model_.size() >= kMaxSequences) return;
    const KvSeqId src = PickSequence();
    const KvSeqId dst = NewId();
    const uint32_t free_before = cache_.num_free_blocks();
    ASSERT_TRUE(cache_.Fork(src, dst).ok());
    EXPECT_EQ(cache_.num_free_blocks(), free_before);
    ModelSeq child;
    child.committed = model_[src].committed;
    model_[dst] = std::move(child);
    ++forks_;
  }

  void FreeOp() {
    const KvSeqId id = PickSequence();
    ASSERT_TRUE(cache_.Free(id).ok());
    model_.erase(id);
    EXPECT_FALSE(cache_.HasSequence(id));
  }

  void CheckAll() {
    std::vector<KvSeqId> ids;
    ASSERT_EQ(cache_.num_sequences(), model_.size());
    for (const auto& entry : model_) {
      const KvSeqId id = entry.first;
      const ModelSeq& m = entry.second;
      ids.push_back(id);
      size_t length, reserved;
      ASSERT_TRUE(cache_.Length(id, &length).ok());
      ASSERT_TRUE(cache_.ReservedLength(id, &reserved).ok());
      ASSERT_EQ(length, m.committed.size()) << "sequence " << id;
      ASSERT_GE(reserved, length + m.pending.size());
      for (size_t pos = 0; pos < length; ++pos) {
        ASSERT_TRUE(TokenMatches(cache_, id, pos, m.committed[pos]));
      }
      for (size_t i = 0; i < m.pending.size(); ++i) {
        ASSERT_TRUE(TokenMatches(cache_, id, length + i, m.pending[i]));
      }
    }
    ASSERT_TRUE(PoolConsistent(cache_, ids));
  }

  KvCacheConfig config_;
  RowSource source_;
  PagedKvCache cache_;
  std::map<KvSeqId, ModelSeq> model_;
  KvSeqId next_id_ = 0;
  int exhausted_ = 0;
  int forks_ = 0;
  int copies_on_write_ = 0;
};

struct FuzzCase {
  KvFormat format;
  size_t num_layers, num_kv_heads, head_dim, block_tokens, num_blocks;
};

TEST(KvCacheTest, RandomOperationsMatchModel) {
  const FuzzCase cases[] = {
      {KvFormat::kF32, 2, 2, 8, 4, 24},   {KvFormat::kF16, 3, 1, 5, 1, 40},
      {KvFormat::kInt8, 1, 3, 12, 16, 8}, {KvFormat::kInt8, 2, 2, 7, 3, 24},
      {KvFormat::kF16, 65, 1, 4, 8, 10},  // more than 64 layers
  };
  uint32_t seed = 1;
  for (const FuzzCase& fc : cases) {
    KvCacheConfig c;
    c.num_layers = fc.num_layers;
    c.num_kv_heads = fc.num_kv_heads;
    c.head_dim = fc.head_dim;
    c.block_tokens = fc.block_tokens;
    c.format = fc.format;
    KvBlockLayout layout;
    ASSERT_TRUE(KvBlockLayout::Compute(c.num_layers, c.num_kv_heads, c.head_dim,
                                       c.block_tokens, c.format, &layout)
                    .ok());
    c.memory_budget_bytes = fc.num_blocks * layout.BlockBytes();
    SCOPED_TRACE(::testing::Message()
                 << GetKvFormatInfo(fc.format).name << " layers "
                 << fc.num_layers << " heads " << fc.num_kv_heads << " dim "
                 << fc.head_dim << " block_tokens " << fc.block_tokens);
    // Fewer steps under qemu (CI runs it there once per CPU profile); the
    // cases stay the same.
    const int steps = (fc.num_layers > 8 ? 500 : 3000) /
                      (getenv("QKERN_UNDER_EMULATION") != nullptr ? 3 : 1);
    Fuzzer fuzzer(c, seed++);
    ASSERT_NO_FATAL_FAILURE(fuzzer.Run(steps));
  }
}

// --- format edge cases -----------------------------------------------------

TEST(KvFormatTest, RowsRoundTripWithinBound) {
  RowSource source(7);
  for (KvFormat format : kAllKvFormats) {
    for (size_t n : {1, 3, 64, 128}) {
      std::vector<float> x(n), out(n);
      std::vector<uint8_t> bytes(n * 4);
      for (int trial = 0; trial < 200; ++trial) {
        source.Fill(x.data(), n);
        float scale = -1.0f;
        ASSERT_EQ(EncodeKvRow(format, x.data(), n, bytes.data(), &scale), n);
        DecodeKvRow(format, bytes.data(), &scale, n, out.data());
        float amax = 0.0f;
        for (float v : x) amax = std::max(amax, std::fabs(v));
        for (size_t i = 0; i < n; ++i) {
          ASSERT_LE(std::fabs(static_cast<double>(out[i]) - x[i]),
                    ErrorBound(format, x[i], amax))
              << GetKvFormatInfo(format).name << " n " << n << " i " << i;
        }
      }
    }
  }
}

TEST(KvFormatTest, Int8SchemeIsSymmetricPerRow) {
  // amax maps to +-127, ties round to even, zero rows get scale 0.
  const float x[4] = {-2.54f, 2.54f, 0.01f, 0.03f};  // scale 0.02
  int8_t q[4];
  float scale;
  ASSERT_EQ(EncodeKvRow(KvFormat::kInt8, x, 4, q, &scale), 4u);
  EXPECT_EQ(scale, 2.54f / 127.0f);
  EXPECT_EQ(q[0], -127);
  EXPECT_EQ(q[1], 127);
  const float ties[3] = {127.0f, 0.5f, 2.5f};  // scale 1: 0.5 -> 0, 2.5 -> 2
  ASSERT_EQ(EncodeKvRow(KvFormat::kInt8, ties, 3, q, &scale), 3u);
  EXPECT_EQ(scale, 1.0f);
  EXPECT_EQ(q[1], 0);
  EXPECT_EQ(q[2], 2);
  const float zeros[2] = {0.0f, -0.0f};
  ASSERT_EQ(EncodeKvRow(KvFormat::kInt8, zeros, 2, q, &scale), 2u);
  EXPECT_EQ(scale, 0.0f);
  EXPECT_EQ(q[0], 0);
  EXPECT_EQ(q[1], 0);
  // A row so small its scale would be subnormal is stored as zeros.
  const float tiny[2] = {1e-37f, -5e-38f};
  ASSERT_EQ(EncodeKvRow(KvFormat::kInt8, tiny, 2, q, &scale), 2u);
  EXPECT_EQ(scale, 0.0f);
  EXPECT_EQ(q[0], 0);
}

TEST(KvFormatTest, UnstorableValuesAreReported) {
  uint8_t bytes[16];
  float scale;
  const float nan_row[3] = {1.0f, NAN, 2.0f};
  const float inf_row[3] = {1.0f, 2.0f, -INFINITY};
  const float big_row[3] = {1.0f, 70000.0f, 2.0f};
  for (KvFormat format : kAllKvFormats) {
    EXPECT_EQ(EncodeKvRow(format, nan_row, 3, bytes, &scale), 1u);
    EXPECT_EQ(EncodeKvRow(format, inf_row, 3, bytes, &scale), 2u);
  }
  EXPECT_EQ(EncodeKvRow(KvFormat::kF16, big_row, 3, bytes, &scale), 1u);
  EXPECT_EQ(EncodeKvRow(KvFormat::kF32, big_row, 3, bytes, &scale), 3u);
  EXPECT_EQ(EncodeKvRow(KvFormat::kInt8, big_row, 3, bytes, &scale), 3u);
  const float f16_max[1] = {65504.0f};
  EXPECT_EQ(EncodeKvRow(KvFormat::kF16, f16_max, 1, bytes, &scale), 1u);
}

// --- layout -----------------------------------------------------------------

TEST(KvLayoutTest, OffsetsAreDisjointAlignedAndInsideTheBlock) {
  for (KvFormat format : kAllKvFormats) {
    for (size_t head_dim : {1, 5, 64, 128}) {
      for (size_t bt : {1, 3, 16, 32}) {
        KvBlockLayout l;
        ASSERT_TRUE(
            KvBlockLayout::Compute(3, 2, head_dim, bt, format, &l).ok());
        EXPECT_EQ(l.BlockBytes() % kKvAlign, 0u);
        EXPECT_EQ(l.RowBytes(),
                  head_dim * GetKvFormatInfo(format).element_bytes);
        EXPECT_EQ(l.BlockBytes(), 3 * 2 * l.HeadBytes());
        std::vector<int> owner(l.BlockBytes(), 0);
        auto claim = [&](size_t begin, size_t bytes) {
          ASSERT_LE(begin + bytes, l.BlockBytes());
          for (size_t i = begin; i < begin + bytes; ++i) {
            ASSERT_EQ(owner[i]++, 0) << "byte " << i << " used twice";
          }
        };
        for (size_t layer = 0; layer < 3; ++layer) {
          for (size_t head = 0; head < 2; ++head) {
            for (KvPart part : {KvPart::kK, KvPart::kV}) {
              const size_t values = l.ValuesOffset(layer, head, part);
              EXPECT_EQ(values % kKvAlign, 0u);
              // Rows fill the values array exactly, token-major (V) or
              // dim-major (K): the first value of the last token's row and
              // the last value of the last dim's row.
              const size_t element = GetKvFormatInfo(format).element_bytes;
              const bool dim_major = part == KvPart::kK;
              EXPECT_EQ(l.TokenStride(part),
                        dim_major ? element : l.RowBytes());
              EXPECT_EQ(l.ValueStride(part),
                        dim_major ? bt * element : element);
              EXPECT_EQ(l.RowOffset(layer, head, part, bt - 1),
                        values + (bt - 1) * l.TokenStride(part));
              EXPECT_EQ(l.RowOffset(layer, head, part, bt - 1) +
                            (head_dim - 1) * l.ValueStride(part) + element,
                        values + bt * l.RowBytes());
              claim(values, bt * l.RowBytes());
              if (l.has_row_scales()) {
                EXPECT_EQ(l.ScalesOffset(layer, head, part) % kKvAlign, 0u);
                claim(l.ScalesOffset(layer, head, part), bt * sizeof(float));
              }
            }
            // Heads back to back, K part then V part: one contiguous run
            // of HeadBytes() per (layer, head).
            EXPECT_EQ(l.ValuesOffset(layer, head, KvPart::kK),
                      (layer * 2 + head) * l.HeadBytes());
          }
        }
      }
    }
  }
}

TEST(KvLayoutTest, ExampleSizes) {
  // Llama-like int8 block: 16 tokens x 128 dims = 2048 code bytes + 64 scale
  // bytes per part; 2 parts x 8 heads x 32 layers.
  KvBlockLayout l;
  ASSERT_TRUE(KvBlockLayout::Compute(32, 8, 128, 16, KvFormat::kInt8, &l).ok());
  EXPECT_EQ(l.HeadBytes(), 2u * (2048 + 64));
  EXPECT_EQ(l.BlockBytes(), 32u * 8 * 2 * (2048 + 64));
  EXPECT_EQ(l.ScalesOffset(0, 0, KvPart::kK), 2048u);
  EXPECT_EQ(l.ValuesOffset(0, 0, KvPart::kV), 2048u + 64);
  EXPECT_EQ(l.ValuesOffset(1, 0, KvPart::kK), 8u * 2 * (2048 + 64));
  ASSERT_TRUE(KvBlockLayout::Compute(30, 3, 64, 32, KvFormat::kF16, &l).ok());
  EXPECT_EQ(l.BlockBytes(), 30u * 3 * 2 * 32 * 64 * 2);
}

// Spread over a pool, every block's pieces tile the pool's storage exactly,
// stay aligned, and one (layer, head)'s pieces of consecutive blocks are
// adjacent: the property decode attention's streaming relies on.
TEST(KvLayoutTest, PoolPiecesTileThePoolWithConsecutiveBlocksAdjacent) {
  for (KvFormat format : kAllKvFormats) {
    for (size_t head_dim : {5, 64}) {
      for (size_t bt : {3, 16}) {
        for (size_t blocks : {1, 2, 5}) {
          KvBlockLayout l;
          ASSERT_TRUE(
              KvBlockLayout::Compute(3, 2, head_dim, bt, format, &l).ok());
          ASSERT_TRUE(l.SetPoolBlocks(blocks).ok());
          EXPECT_EQ(l.BlockStride(), l.HeadBytes());
          std::vector<int> owner(blocks * l.BlockBytes(), 0);
          for (size_t b = 0; b < blocks; ++b) {
            const size_t base = b * l.BlockStride();
            for (size_t layer = 0; layer < 3; ++layer) {
              for (size_t head = 0; head < 2; ++head) {
                const size_t piece =
                    base + l.ValuesOffset(layer, head, KvPart::kK);
                EXPECT_EQ(piece % kKvAlign, 0u);
                EXPECT_EQ(base + l.ValuesOffset(layer, head, KvPart::kV),
                          piece + l.HeadBytes() / 2);
                if (l.has_row_scales()) {
                  EXPECT_LT(base + l.ScalesOffset(layer, head, KvPart::kV),
                            piece + l.HeadBytes());
                }
                ASSERT_LE(piece + l.HeadBytes(), owner.size());
                for (size_t i = piece; i < piece + l.HeadBytes(); ++i) {
                  ASSERT_EQ(owner[i]++, 0) << "byte " << i << " used twice";
                }
                if (b + 1 < blocks) {
                  EXPECT_EQ(piece + l.HeadBytes(),
                            base + l.BlockStride() +
                                l.ValuesOffset(layer, head, KvPart::kK));
                }
              }
            }
          }
          EXPECT_EQ(std::count(owner.begin(), owner.end(), 1),
                    static_cast<std::ptrdiff_t>(owner.size()));
        }
      }
    }
  }
  KvBlockLayout l;
  ASSERT_TRUE(KvBlockLayout::Compute(2, 2, 64, 16, KvFormat::kF16, &l).ok());
  ExpectError(l.SetPoolBlocks(0), StatusCode::kInvalidArgument,
              "pool of 0 blocks");
  ExpectError(l.SetPoolBlocks(SIZE_MAX / 2), StatusCode::kInvalidArgument,
              "overflows size_t");
}

// A kernel reading the bytes at the layout's offsets finds what WriteKV
// stored: the contract the attention kernel relies on.
TEST(KvLayoutTest, KernelViewMatchesWrites) {
  for (KvFormat format : kAllKvFormats) {
    PagedKvCache cache;
    ASSERT_TRUE(PagedKvCache::Create(SmallConfig(format, 4, 8), &cache).ok());
    const KvCacheConfig& c = cache.config();
    RowSource source(11);
    ASSERT_TRUE(cache.AddSequence(3).ok());
    std::vector<Token> tokens;
    for (int i = 0; i < 7; ++i) tokens.push_back(MakeToken(c, &source));
    ASSERT_TRUE(Append(&cache, 3, tokens).ok());
    KvBlockTable table;
    ASSERT_TRUE(cache.BlockTable(3, &table).ok());
    ASSERT_EQ(table.size, 2u);
    ASSERT_TRUE(cache.ValidateBlockTable(table.data, table.size, 7).ok());
    const KvBlockLayout& l = cache.layout();
    std::vector<uint8_t> expect(l.RowBytes()), stored(l.RowBytes());
    for (size_t pos = 0; pos < 7; ++pos) {
      const uint8_t* block = cache.BlockData(table[pos / c.block_tokens]);
      ASSERT_NE(block, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(block) % kKvAlign, 0u);
      const size_t slot = pos % c.block_tokens;
      for (size_t layer = 0; layer < c.num_layers; ++layer) {
        for (size_t head = 0; head < c.num_kv_heads; ++head) {
          for (KvPart part : {KvPart::kK, KvPart::kV}) {
            const float* x =
                (part == KvPart::kK ? tokens[pos].k : tokens[pos].v).data() +
                (layer * c.num_kv_heads + head) * c.head_dim;
            float scale = 0.0f;
            EncodeKvRow(format, x, c.head_dim, expect.data(), &scale);
            GatherKvValues(block + l.RowOffset(layer, head, part, slot),
                           l.ValueStride(part), c.head_dim,
                           GetKvFormatInfo(format).element_bytes,
                           stored.data());
            EXPECT_EQ(memcmp(stored.data(), expect.data(), l.RowBytes()), 0);
            if (l.has_row_scales()) {
              float stored;
              memcpy(&stored, block + l.ScaleOffset(layer, head, part, slot),
                     4);
              EXPECT_EQ(stored, scale);
            }
          }
        }
      }
    }
  }
}

// --- (b) pool exhaustion ----------------------------------------------------

TEST(KvCacheTest, ExhaustionChangesNothingAndFreeingRecovers) {
  for (KvFormat format : kAllKvFormats) {
    PagedKvCache cache;
    ASSERT_TRUE(PagedKvCache::Create(SmallConfig(format, 4, 6), &cache).ok());
    const KvCacheConfig& c = cache.config();
    RowSource source(5);
    auto tokens = [&](size_t n) {
      std::vector<Token> t;
      for (size_t i = 0; i < n; ++i) t.push_back(MakeToken(c, &source));
      return t;
    };
    ASSERT_TRUE(cache.AddSequence(1).ok());
    ASSERT_TRUE(cache.AddSequence(2).ok());
    ASSERT_TRUE(Append(&cache, 1, tokens(10)).ok());  // 3 blocks
    ASSERT_TRUE(Append(&cache, 2, tokens(6)).ok());   // 2 blocks
    ASSERT_TRUE(cache.Fork(2, 3).ok());               // shares both
    ASSERT_EQ(cache.num_free_blocks(), 1u);
    const std::vector<KvSeqId> ids = {1, 2, 3};
    const std::vector<uint32_t> before = Snapshot(cache, ids);

    // 7 more tokens for sequence 1: 2 new blocks, 1 free.
    Status status = cache.ReserveTokens(1, 7);
    EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
    EXPECT_TRUE(Mentions(status, "needs 2 blocks"));
    EXPECT_TRUE(Mentions(status, "only 1 of 6 are free"));
    EXPECT_EQ(Snapshot(cache, ids), before);

    // Sequence 3 appending into its shared half block needs a copy (1) plus
    // a new block (1): also too many.
    status = cache.ReserveTokens(3, 3);
    EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
    EXPECT_TRUE(Mentions(status, "1 new, 1 copy-on-write"));
    EXPECT_EQ(Snapshot(cache, ids), before);

    // More than the whole pool, with a count that would overflow.
    status = cache.ReserveTokens(1, SIZE_MAX);
    EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
    EXPECT_TRUE(Mentions(status, "the whole pool holds 24 tokens"));
    EXPECT_EQ(Snapshot(cache, ids), before);

    // Freeing sequence 2 releases nothing (3 shares its blocks); freeing 3
    // as well releases both blocks and the reservation fits.
    ASSERT_TRUE(cache.Free(2).ok());
    EXPECT_EQ(cache.num_free_blocks(), 1u);
    ASSERT_TRUE(cache.Free(3).ok());
    EXPECT_EQ(cache.num_free_blocks(), 3u);
    ASSERT_TRUE(cache.ReserveTokens(1, 7).ok());
    EXPECT_EQ(cache.num_free_blocks(), 1u);
    EXPECT_TRUE(PoolConsistent(cache, {1}));
  }
}

// --- (c) fork and copy-on-write ----------------------------------------------

class ForkTest : public ::testing::TestWithParam<KvFormat> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(
        PagedKvCache::Create(SmallConfig(GetParam(), 4, 32), &cache_).ok());
  }
  std::vector<Token> Tokens(size_t n) {
    std::vector<Token> t;
    for (size_t i = 0; i < n; ++i)
      t.push_back(MakeToken(cache_.config(), &source_));
    return t;
  }
  std::vector<uint32_t> Table(KvSeqId id) {
    KvBlockTable table;
    EXPECT_TRUE(cache_.BlockTable(id, &table).ok());
    return std::vector<uint32_t>(table.begin(), table.end());
  }

  PagedKvCache cache_;
  RowSource source_{9};
};

TEST_P(ForkTest, ChildAndParentNeverSeeEachOthersWrites) {
  const std::vector<Token> prefix = Tokens(6);  // 1.5 blocks
  ASSERT_TRUE(cache_.AddSequence(10).ok());
  ASSERT_TRUE(Append(&cache_, 10, prefix).ok());
  const std::vector<uint32_t> parent_table = Table(10);
  const uint32_t free_before = cache_.num_free_blocks();
  ASSERT_TRUE(cache_.Fork(10, 20).ok());
  EXPECT_EQ(Table(20), parent_table);  // everything shared, no block used
  EXPECT_EQ(cache_.num_free_blocks(), free_before);
  EXPECT_EQ(cache_.pool().RefCount(parent_table[1]), 2u);

  // The child appends into the shared half block: it gets a copy, keeps the
  // full block shared, and the parent is unchanged.
  const std::vector<uint32_t> parent_before = Snapshot(cache_, {10}, false);
  const std::vector<Token> child_tokens = Tokens(3);
  ASSERT_TRUE(Append(&cache_, 20, child_tokens).ok());
  const std::vector<uint32_t> child_table = Table(20);
  EXPECT_EQ(child_table[0], parent_table[0]);
  EXPECT_NE(child_table[1], parent_table[1]);
  EXPECT_EQ(cache_.pool().RefCount(parent_table[0]), 2u);
  EXPECT_EQ(cache_.pool().RefCount(parent_table[1]), 1u);
  EXPECT_EQ(Snapshot(cache_, {10}, false), parent_before);

  // Now the parent's half block is its own again: appending needs no copy
  // and does not change the child.
  size_t needed;
  ASSERT_TRUE(cache_.BlocksToReserve(10, 2, &needed).ok());
  EXPECT_EQ(needed, 0u);
  const std::vector<uint32_t> child_before = Snapshot(cache_, {20}, false);
  const std::vector<Token> parent_tokens = Tokens(5);
  ASSERT_TRUE(Append(&cache_, 10, parent_tokens).ok());
  EXPECT_EQ(Table(10)[1], parent_table[1]);
  EXPECT_EQ(Snapshot(cache_, {20}, false), child_before);

  for (size_t pos = 0; pos < 6; ++pos) {
    EXPECT_TRUE(TokenMatches(cache_, 10, pos, prefix[pos]));
    EXPECT_TRUE(TokenMatches(cache_, 20, pos, prefix[pos]));
  }
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(TokenMatches(cache_, 20, 6 + i, child_tokens[i]));
  }
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_TRUE(TokenMatches(cache_, 10, 6 + i, parent_tokens[i]));
  }

  // Freeing the parent keeps the shared prefix alive for the child.
  ASSERT_TRUE(cache_.Free(10).ok());
  for (size_t pos = 0; pos < 6; ++pos) {
    EXPECT_TRUE(TokenMatches(cache_, 20, pos, prefix[pos]));
  }
  EXPECT_TRUE(PoolConsistent(cache_, {20}));
}

TEST_P(ForkTest, ParentTruncatingIntoSharedBlockCopiesBeforeWriting) {
  const std::vector<Token> prefix = Tokens(7);
  ASSERT_TRUE(cache_.AddSequence(1).ok());
  ASSERT_TRUE(Append(&cache_, 1, prefix).ok());
  ASSERT_TRUE(cache_.Fork(1, 2).ok());
  // Roll the parent back into the shared block and regenerate: positions
  // 5 and 6 of the child must keep their values.
  ASSERT_TRUE(cache_.Truncate(1, 5).ok());
  size_t needed;
  ASSERT_TRUE(cache_.BlocksToReserve(1, 2, &needed).ok());
  EXPECT_EQ(needed, 1u);  // the copy
  const std::vector<Token> regenerated = Tokens(2);
  ASSERT_TRUE(Append(&cache_, 1, regenerated).ok());
  for (size_t pos = 0; pos < 7; ++pos) {
    EXPECT_TRUE(TokenMatches(cache_, 2, pos, prefix[pos]));
  }
  EXPECT_TRUE(TokenMatches(cache_, 1, 5, regenerated[0]));
  EXPECT_TRUE(TokenMatches(cache_, 1, 6, regenerated[1]));
  EXPECT_TRUE(PoolConsistent(cache_, {1, 2}));
}

TEST_P(ForkTest, ForkWhileParentHasAPendingReservation) {
  const std::vector<Token> prefix = Tokens(5);
  ASSERT_TRUE(cache_.AddSequence(1).ok());
  ASSERT_TRUE(Append(&cache_, 1, prefix).ok());
  // The parent reserves and writes position 5 (same block) but has not
  // committed it when the fork happens.
  ASSERT_TRUE(cache_.ReserveTokens(1, 2).ok());
  const std::vector<Token> pending = Tokens(2);
  ASSERT_TRUE(WriteToken(&cache_, 1, 5, pending[0]).ok());
  ASSERT_TRUE(cache_.Fork(1, 2).ok());
  size_t length;
  ASSERT_TRUE(cache_.Length(2, &length).ok());
  EXPECT_EQ(length, 5u);
  // The parent keeps its reservation and finishes the step.
  ASSERT_TRUE(WriteToken(&cache_, 1, 6, pending[1]).ok());
  ASSERT_TRUE(cache_.CommitTokens(1, 2).ok());
  // The child appends: copy first, then its own position 5.
  const std::vector<Token> child_tokens = Tokens(1);
  ASSERT_TRUE(Append(&cache_, 2, child_tokens).ok());
  for (size_t pos = 0; pos < 5; ++pos) {
    EXPECT_TRUE(TokenMatches(cache_, 1, pos, prefix[pos]));
    EXPECT_TRUE(TokenMatches(cache_, 2, pos, prefix[pos]));
  }
  EXPECT_TRUE(TokenMatches(cache_, 1, 5, pending[0]));
  EXPECT_TRUE(TokenMatches(cache_, 1, 6, pending[1]));
  EXPECT_TRUE(TokenMatches(cache_, 2, 5, child_tokens[0]));
  EXPECT_TRUE(PoolConsistent(cache_, {1, 2}));
}

TEST_P(ForkTest, SpeculativeRollbackFreesDraftBlocks) {
  ASSERT_TRUE(cache_.AddSequence(1).ok());
  const std::vector<Token> prompt = Tokens(4);
  ASSERT_TRUE(Append(&cache_, 1, prompt).ok());
  const uint32_t free_after_prompt = cache_.num_free_blocks();
  ASSERT_TRUE(Append(&cache_, 1, Tokens(9)).ok());  // 9 draft tokens
  EXPECT_EQ(cache_.num_free_blocks() + 3, free_after_prompt);
  ASSERT_TRUE(cache_.Truncate(1, 5).ok());  // accept one
  EXPECT_EQ(cache_.num_free_blocks() + 1, free_after_prompt);
  for (size_t pos = 0; pos < 4; ++pos) {
    EXPECT_TRUE(TokenMatches(cache_, 1, pos, prompt[pos]));
  }
  ASSERT_TRUE(cache_.Truncate(1, 0).ok());
  EXPECT_EQ(cache_.num_free_blocks(), cache_.num_blocks());
}

INSTANTIATE_TEST_SUITE_P(AllFormats, ForkTest,
                         ::testing::ValuesIn(kAllKvFormats),
                         [](const ::testing::TestParamInfo<KvFormat>& info) {
                           return std::string(GetKvFormatInfo(info.param).name);
                         });

// --- (d) bad input ----------------------------------------------------------

TEST(KvCacheTest, BadConfigsAreRejected) {
  const KvCacheConfig good = SmallConfig(KvFormat::kF16, 16, 4);
  PagedKvCache cache;
  ASSERT_TRUE(PagedKvCache::Create(good, &cache).ok());

  KvCacheConfig c = good;
  c.num_layers = 0;
  ExpectError(PagedKvCache::Create(c, &cache), StatusCode::kInvalidArgument,
              "num_layers = 0");
  c = good;
  c.num_kv_heads = 5000;
  ExpectError(PagedKvCache::Create(c, &cache), StatusCode::kInvalidArgument,
              "num_kv_heads = 5000, must be in [1, 1024]");
  c = good;
  c.head_dim = 0;
  ExpectError(PagedKvCache::Create(c, &cache), StatusCode::kInvalidArgument,
              "head_dim = 0");
  c = good;
  c.block_tokens = 100000;
  ExpectError(PagedKvCache::Create(c, &cache), StatusCode::kInvalidArgument,
              "block_tokens = 100000");
  c = good;
  c.format = static_cast<KvFormat>(7);
  ExpectError(PagedKvCache::Create(c, &cache), StatusCode::kInvalidArgument,
              "unknown format 7");
  c = good;
  c.memory_budget_bytes = cache.layout().BlockBytes() - 1;
  ExpectError(PagedKvCache::Create(c, &cache), StatusCode::kInvalidArgument,
              std::to_string(cache.layout().BlockBytes() - 1) + " bytes");
  c = good;
  c.memory_budget_bytes = SIZE_MAX;  // far too many blocks for the memory
  const Status huge = PagedKvCache::Create(c, &cache);
  EXPECT_FALSE(huge.ok());
  EXPECT_TRUE(huge.code() == StatusCode::kResourceExhausted ||
              huge.code() == StatusCode::kInvalidArgument)
      << huge.message();
  ExpectError(PagedKvCache::Create(good, nullptr), StatusCode::kInvalidArgument,
              "null");
  // Failures left the cache as it was.
  EXPECT_EQ(cache.num_blocks(), 4u);

  // Every limit at its maximum: 2^48 bytes a block, which only a 32-bit
  // size_t cannot count.
  KvBlockLayout l;
  const Status biggest =
      KvBlockLayout::Compute(kMaxKvLayers, kMaxKvHeads, kMaxKvHeadDim,
                             kMaxKvBlockTokens, KvFormat::kF32, &l);
  if (sizeof(size_t) == 8) {
    ASSERT_TRUE(biggest.ok()) << biggest.message();
    EXPECT_EQ(l.BlockBytes(), size_t{1} << 48);
  } else {
    ExpectError(biggest, StatusCode::kInvalidArgument, "overflows");
  }

  PagedKvCache empty;
  ExpectError(empty.AddSequence(1), StatusCode::kInvalidArgument,
              "PagedKvCache::Create");
}

TEST(KvCacheTest, BadCallsNameTheValueAndTheLimit) {
  PagedKvCache cache;
  ASSERT_TRUE(
      PagedKvCache::Create(SmallConfig(KvFormat::kInt8, 4, 8), &cache).ok());
  RowSource source(3);
  const Token t = MakeToken(cache.config(), &source);
  const float* k = t.k.data();
  const float* v = t.v.data();
  ASSERT_TRUE(cache.AddSequence(1).ok());
  ASSERT_TRUE(Append(&cache, 1, {t, t, t}).ok());
  const std::vector<uint32_t> before = Snapshot(cache, {1});

  // Unknown sequence ids, for every entry point.
  const KvSeqId bad = 77777;
  size_t n;
  KvBlockTable table;
  float out[64];
  for (const Status& status :
       {cache.Fork(bad, 2), cache.Free(bad), cache.Length(bad, &n),
        cache.ReservedLength(bad, &n), cache.BlocksToReserve(bad, 1, &n),
        cache.ReserveTokens(bad, 1), cache.WriteKV(bad, 0, 0, k, v),
        cache.CommitTokens(bad, 0), cache.Truncate(bad, 0),
        cache.BlockTable(bad, &table), cache.ReadKV(bad, 0, 0, out, out)}) {
    ExpectError(status, StatusCode::kInvalidArgument,
                "unknown sequence id 77777");
  }
  ExpectError(cache.AddSequence(1), StatusCode::kInvalidArgument,
              "sequence id 1 already exists");
  ExpectError(cache.Fork(1, 1), StatusCode::kInvalidArgument,
              "sequence id 1 already exists");

  // Positions and layers.
  ASSERT_TRUE(cache.ReserveTokens(1, 2).ok());  // positions 3 and 4
  ExpectError(cache.WriteKV(1, 2, 3, k, v), StatusCode::kOutOfRange,
              "layer 2 is out of range (num_layers 2)");
  ExpectError(cache.WriteKV(1, 0, 5, k, v), StatusCode::kOutOfRange,
              "position 5 of sequence 1 is past its reserved length 5");
  ExpectError(cache.WriteKV(1, 0, SIZE_MAX, k, v), StatusCode::kOutOfRange,
              std::to_string(SIZE_MAX));
  ExpectError(cache.WriteKV(1, 0, 2, k, v), StatusCode::kInvalidArgument,
              "position 2 of sequence 1 is already committed (length 3)");
  ExpectError(cache.WriteKV(1, 0, 3, nullptr, v), StatusCode::kInvalidArgument,
              "k is null");
  ExpectError(cache.WriteKV(1, 0, 3, k, nullptr), StatusCode::kInvalidArgument,
              "v is null");
  std::vector<float> nan_v(t.v.begin(), t.v.end());
  nan_v[9] = NAN;
  ExpectError(cache.WriteKV(1, 0, 3, k, nan_v.data()),
              StatusCode::kInvalidArgument, "v[9] = nan");
  ExpectError(cache.ReadKV(1, 0, 3, out, out), StatusCode::kOutOfRange,
              "position 3 of sequence 1 is reserved but not written for "
              "layer 0");
  ExpectError(cache.ReadKV(1, 5, 0, out, out), StatusCode::kOutOfRange,
              "layer 5");
  ExpectError(cache.ReadKV(1, 0, 9, out, out), StatusCode::kOutOfRange,
              "position 9");
  ExpectError(cache.ReadKV(1, 0, 0, nullptr, out), StatusCode::kInvalidArgument,
              "k is null");
  ExpectError(cache.CommitTokens(1, 3), StatusCode::kOutOfRange,
              "3 tokens requested but sequence 1 has 2 reserved");
  ASSERT_TRUE(WriteToken(&cache, 1, 3, t).ok());
  ASSERT_TRUE(cache.WriteKV(1, 0, 4, k, v).ok());  // layer 1 missing
  ExpectError(cache.CommitTokens(1, 2), StatusCode::kInvalidArgument,
              "position 4 of sequence 1 was never written for layer 1");
  // A failed rewrite un-marks the position: it cannot be committed stale.
  ASSERT_TRUE(cache.WriteKV(1, 1, 4, k, v).ok());
  ExpectError(cache.WriteKV(1, 1, 4, k, nan_v.data()),
              StatusCode::kInvalidArgument, "nan");
  ExpectError(cache.CommitTokens(1, 2), StatusCode::kInvalidArgument,
              "layer 1");
  ExpectError(cache.Truncate(1, 4), StatusCode::kOutOfRange,
              "new length 4 is past the length 3 of sequence 1");
  // Dropping the reservation restores the committed state exactly.
  ASSERT_TRUE(cache.Truncate(1, 3).ok());
  EXPECT_EQ(Snapshot(cache, {1}), before);

  // Null outputs.
  ExpectError(cache.Length(1, nullptr), StatusCode::kInvalidArgument, "null");
  ExpectError(cache.BlockTable(1, nullptr), StatusCode::kInvalidArgument,
              "null");

  // Block indices.
  EXPECT_EQ(cache.BlockData(8), nullptr);
  EXPECT_EQ(cache.BlockData(UINT32_MAX), nullptr);
  ASSERT_TRUE(cache.BlockTable(1, &table).ok());
  std::vector<uint32_t> forged(table.begin(), table.end());
  ASSERT_TRUE(cache.ValidateBlockTable(forged.data(), forged.size(), 3).ok());
  ExpectError(cache.ValidateBlockTable(forged.data(), forged.size(), 5),
              StatusCode::kOutOfRange, "1 entries, 5 tokens need 2");
  forged[0] = 8;
  ExpectError(cache.ValidateBlockTable(forged.data(), forged.size(), 3),
              StatusCode::kOutOfRange,
              "block index 8 is out of range (pool has 8 blocks)");
  forged[0] = 5;  // in range but free
  ExpectError(cache.ValidateBlockTable(forged.data(), forged.size(), 3),
              StatusCode::kInvalidArgument, "block index 5 is free");
  ExpectError(cache.ValidateBlockTable(nullptr, 1, 3),
              StatusCode::kInvalidArgument, "null");
  EXPECT_EQ(Snapshot(cache, {1}), before);
}

TEST(KvCacheTest, F16RejectsValuesItWouldTurnIntoInfinity) {
  PagedKvCache cache;
  ASSERT_TRUE(
      PagedKvCache::Create(SmallConfig(KvFormat::kF16, 4, 2), &cache).ok());
  ASSERT_TRUE(cache.AddSequence(0).ok());
  ASSERT_TRUE(cache.ReserveTokens(0, 1).ok());
  std::vector<float> k(cache.RowFloats(), 1.0f), v(cache.RowFloats(), 1.0f);
  k[3] = 1e5f;
  ExpectError(cache.WriteKV(0, 0, 0, k.data(), v.data()),
              StatusCode::kInvalidArgument, "k[3] = 100000");
}

TEST(BlockPoolTest, RefcountsAndDoubleFree) {
  BlockPool pool;
  ASSERT_TRUE(BlockPool::Create(64, 64 * 3, &pool).ok());
  uint32_t blocks[3] = {0, 0, 0};
  ASSERT_TRUE(pool.Allocate(2, blocks).ok());
  EXPECT_EQ(pool.num_free(), 1u);
  ExpectError(pool.Allocate(2, blocks), StatusCode::kResourceExhausted,
              "2 blocks requested, 1 of 3 free");
  EXPECT_EQ(pool.num_free(), 1u);
  ASSERT_TRUE(pool.Ref(blocks[0]).ok());
  EXPECT_EQ(pool.RefCount(blocks[0]), 2u);
  ASSERT_TRUE(pool.Unref(blocks[0]).ok());
  ASSERT_TRUE(pool.Unref(blocks[0]).ok());
  EXPECT_EQ(pool.num_free(), 2u);
  ExpectError(pool.Unref(blocks[0]), StatusCode::kInvalidArgument, "is free");
  ExpectError(pool.Ref(3), StatusCode::kOutOfRange, "block index 3");
  EXPECT_EQ(pool.num_free(), 2u);
}

TEST(BlockPoolTest, BaseStrideSpacesTheBases) {
  BlockPool pool;
  ASSERT_TRUE(BlockPool::Create(256, 256 * 3, &pool, 64).ok());
  EXPECT_EQ(pool.base_stride(), 64u);
  EXPECT_EQ(pool.Data(2) - pool.Data(0), 128);
  ASSERT_TRUE(BlockPool::Create(256, 256 * 3, &pool).ok());
  EXPECT_EQ(pool.Data(2) - pool.Data(0), 512);
  ExpectError(BlockPool::Create(256, 256 * 3, &pool, 512),
              StatusCode::kInvalidArgument, "base stride 512 exceeds");
}

// --- (e) budget sizing ------------------------------------------------------

TEST(KvCacheTest, BudgetGivesFloorOfBudgetOverBlockBytes) {
  for (KvFormat format : kAllKvFormats) {
    KvCacheConfig c = SmallConfig(format, 16, 1);
    const size_t block = c.memory_budget_bytes;
    for (size_t blocks : {1, 2, 7, 100}) {
      for (size_t extra : {size_t{0}, size_t{1}, block - 1}) {
        c.memory_budget_bytes = blocks * block + extra;
        PagedKvCache cache;
        ASSERT_TRUE(PagedKvCache::Create(c, &cache).ok());
        EXPECT_EQ(cache.layout().BlockBytes(), block);
        EXPECT_EQ(cache.num_blocks(), blocks);
        EXPECT_EQ(cache.num_free_blocks(), blocks);
        EXPECT_EQ(cache.pool().block_bytes(), block);
      }
    }
    c.memory_budget_bytes = block - 1;
    PagedKvCache cache;
    ExpectError(PagedKvCache::Create(c, &cache), StatusCode::kInvalidArgument,
                "smaller than one block of " + std::to_string(block));
    c.memory_budget_bytes = 0;
    ExpectError(PagedKvCache::Create(c, &cache), StatusCode::kInvalidArgument,
                "budget of 0 bytes");
  }
}

// A pool of N blocks holds exactly N * block_tokens tokens.
TEST(KvCacheTest, PoolHoldsExactlyItsCapacity) {
  PagedKvCache cache;
  ASSERT_TRUE(
      PagedKvCache::Create(SmallConfig(KvFormat::kF32, 4, 5), &cache).ok());
  ASSERT_TRUE(cache.AddSequence(0).ok());
  ASSERT_TRUE(cache.ReserveTokens(0, 20).ok());
  EXPECT_EQ(cache.num_free_blocks(), 0u);
  ASSERT_TRUE(cache.Truncate(0, 0).ok());
  EXPECT_EQ(cache.ReserveTokens(0, 21).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(cache.num_free_blocks(), 5u);
}

// Blocks are handed out in ascending order, and a freed or truncated
// sequence's blocks come back to the next sequence in position order, so
// each sequence's pieces stay ascending streams (KvBlockLayout).
TEST(KvCacheTest, BlocksComeBackInPositionOrder) {
  PagedKvCache cache;
  ASSERT_TRUE(
      PagedKvCache::Create(SmallConfig(KvFormat::kF16, 4, 8), &cache).ok());
  auto table_of = [&](KvSeqId seq) {
    KvBlockTable t;
    EXPECT_TRUE(cache.BlockTable(seq, &t).ok());
    return std::vector<uint32_t>(t.begin(), t.end());
  };
  ASSERT_TRUE(cache.AddSequence(1).ok());
  ASSERT_TRUE(cache.ReserveTokens(1, 20).ok());
  EXPECT_EQ(table_of(1), (std::vector<uint32_t>{0, 1, 2, 3, 4}));
  ASSERT_TRUE(cache.AddSequence(2).ok());
  ASSERT_TRUE(cache.ReserveTokens(2, 4).ok());
  EXPECT_EQ(table_of(2), (std::vector<uint32_t>{5}));
  ASSERT_TRUE(cache.Free(1).ok());
  ASSERT_TRUE(cache.ReserveTokens(2, 16).ok());
  EXPECT_EQ(table_of(2), (std::vector<uint32_t>{5, 0, 1, 2}));
  ASSERT_TRUE(cache.Truncate(2, 0).ok());
  ASSERT_TRUE(cache.AddSequence(3).ok());
  ASSERT_TRUE(cache.ReserveTokens(3, 16).ok());
  EXPECT_EQ(table_of(3), (std::vector<uint32_t>{5, 0, 1, 2}));
  ASSERT_TRUE(cache.ReserveTokens(3, 24).ok());
  EXPECT_EQ(table_of(3), (std::vector<uint32_t>{5, 0, 1, 2, 3, 4}));
}

// --- SIMD encoders (kv_codec-inl.h) against the scalar EncodeKvRow ----------

class KvEncodeTest : public test::PerTarget {};

// Bytes, scale and return value of the dispatched encoder equal the
// reference's for every format, on rows that hit every rounding path.
::testing::AssertionResult EncodersAgree(KvFormat format, const float* x,
                                         size_t n) {
  std::vector<uint8_t> want(n * 4 + 1, 0xA5), got(n * 4 + 1, 0xA5);
  float want_scale = -1.0f, got_scale = -1.0f;
  const size_t want_n = EncodeKvRow(format, x, n, want.data(), &want_scale);
  const size_t got_n =
      detail::DispatchEncodeKvRow(format, x, n, got.data(), &got_scale);
  const char* name = GetKvFormatInfo(format).name;
  if (want_n != got_n) {
    return ::testing::AssertionFailure()
           << name << " n " << n << ": returned " << got_n << ", reference "
           << want_n << " on " << ActiveTargetName();
  }
  if (want_n != n) return ::testing::AssertionSuccess();  // bytes unspecified
  const size_t bytes = n * GetKvFormatInfo(format).element_bytes;
  for (size_t i = 0; i < bytes; ++i) {
    if (want[i] != got[i]) {
      const size_t e = i / GetKvFormatInfo(format).element_bytes;
      return ::testing::AssertionFailure()
             << name << " n " << n << ": byte " << i << " (value " << x[e]
             << ") is " << int{got[i]} << ", reference " << int{want[i]}
             << " on " << ActiveTargetName();
    }
  }
  if (want[bytes] != 0xA5 || got[bytes] != 0xA5) {
    return ::testing::AssertionFailure() << name << ": wrote past the row";
  }
  if (format == KvFormat::kInt8 &&
      memcmp(&want_scale, &got_scale, sizeof(float)) != 0) {
    return ::testing::AssertionFailure()
           << name << " n " << n << ": scale " << got_scale << ", reference "
           << want_scale << " on " << ActiveTargetName();
  }
  return ::testing::AssertionSuccess();
}

TEST_P(KvEncodeTest, SimdEncodersMatchReferenceBitForBit) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<uint32_t> bits;
  std::normal_distribution<float> normal;
  for (KvFormat format : kAllKvFormats) {
    for (size_t n = 1; n <= 140; n += (n < 40 ? 1 : 13)) {
      std::vector<float> x(n);
      for (int trial = 0; trial < 20; ++trial) {
        for (size_t i = 0; i < n; ++i) {
          switch ((trial + i) % 5) {
            case 0:  // any finite f32 within the f16 range
              do {
                uint32_t u = bits(rng);
                memcpy(&x[i], &u, 4);
              } while (!(std::fabs(x[i]) < 65000.0f));
              break;
            case 1:  // f16 subnormal range and ties of the f16 grid
              x[i] = std::ldexp(static_cast<float>(bits(rng) % 4096) + 0.5f,
                                -25 + static_cast<int>(bits(rng) % 8));
              break;
            case 2:  // halfway between f16 values (ties to even)
              x[i] = std::ldexp(1.0f + (2.0f * (bits(rng) % 1024) + 1) / 2048,
                                static_cast<int>(bits(rng) % 30) - 14);
              break;
            default:
              x[i] = normal(rng) * (trial % 3 == 0 ? 1000.0f : 1.0f);
          }
          if (bits(rng) % 2) x[i] = -x[i];
        }
        ASSERT_TRUE(EncodersAgree(format, x.data(), n));
        // int8 ties: values that land on k + 1/2 after scaling.
        for (size_t i = 0; i < n; ++i) {
          x[i] = static_cast<float>(static_cast<int>(bits(rng) % 255) - 127) +
                 0.5f;
        }
        x[0] = 127.0f;
        ASSERT_TRUE(EncodersAgree(format, x.data(), n));
      }
    }
  }
}

TEST_P(KvEncodeTest, SimdEncodersReportTheFirstUnstorableValue) {
  const float specials[] = {NAN,      -NAN,      INFINITY,   -INFINITY,
                            65520.0f, -65520.0f, 65519.996f, 65504.0f,
                            1e30f,    FLT_MAX};
  for (KvFormat format : kAllKvFormats) {
    for (size_t n : {1, 5, 16, 33, 64, 100}) {
      for (float special : specials) {
        for (size_t at : {size_t{0}, n / 2, n - 1}) {
          std::vector<float> x =
              test::RandomValues(n, static_cast<uint32_t>(n));
          x[at] = special;
          ASSERT_TRUE(EncodersAgree(format, x.data(), n))
              << "special " << special << " at " << at;
          if (at + 1 < n) {  // two bad values: the first one counts
            x[n - 1] = NAN;
            ASSERT_TRUE(EncodersAgree(format, x.data(), n));
          }
        }
      }
    }
  }
  // Below kKvInt8MinAmax the row is zeros with scale 0, as the reference.
  const float tiny[3] = {1e-37f, -5e-38f, 0.0f};
  ASSERT_TRUE(EncodersAgree(KvFormat::kInt8, tiny, 3));
}

QKERN_INSTANTIATE_PER_TARGET(KvEncodeTest);

// --- In-place writes: WritableKvRow / MarkKvWritten ----------------------

TEST(KvCacheTest, WritableRowsAreValidatedAndMarkedLikeWriteKV) {
  KvCacheConfig c;
  c.num_layers = 2;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.block_tokens = 4;
  c.format = KvFormat::kInt8;
  c.memory_budget_bytes = size_t{1} << 16;
  PagedKvCache cache;
  ASSERT_TRUE(PagedKvCache::Create(c, &cache).ok());
  ASSERT_TRUE(cache.AddSequence(1).ok());
  ASSERT_TRUE(cache.ReserveTokens(1, 5).ok());
  KvRowSlot slot;
  const StatusCode kBad = StatusCode::kInvalidArgument;
  ExpectError(cache.WritableKvRow(2, 0, 0, 0, KvPart::kK, &slot), kBad,
              "unknown sequence id 2");
  ExpectError(cache.WritableKvRow(1, 2, 0, 0, KvPart::kK, &slot),
              StatusCode::kOutOfRange, "layer 2");
  ExpectError(cache.WritableKvRow(1, 0, 5, 0, KvPart::kK, &slot),
              StatusCode::kOutOfRange, "ReserveTokens");
  ExpectError(cache.WritableKvRow(1, 0, 0, 2, KvPart::kK, &slot),
              StatusCode::kOutOfRange, "kv head 2");
  ExpectError(cache.WritableKvRow(1, 0, 0, 0, static_cast<KvPart>(2), &slot),
              kBad, "part 2");
  ExpectError(cache.WritableKvRow(1, 0, 0, 0, KvPart::kK, nullptr), kBad,
              "output is null");
  ExpectError(cache.MarkKvWritten(1, 0, 5), StatusCode::kOutOfRange,
              "ReserveTokens");

  // Rows written through the slots read back as WriteKV's would.
  const std::vector<float> k = test::RandomValues(16, 1);
  const std::vector<float> v = test::RandomValues(16, 2);
  for (size_t pos = 0; pos < 5; ++pos) {
    for (size_t layer = 0; layer < 2; ++layer) {
      for (size_t h = 0; h < 2; ++h) {
        for (KvPart part : {KvPart::kK, KvPart::kV}) {
          ASSERT_TRUE(cache.WritableKvRow(1, layer, pos, h, part, &slot).ok());
          ASSERT_NE(slot.scale, nullptr);
          const float* src = (part == KvPart::kK ? k : v).data() + h * 8;
          ASSERT_EQ(EncodeKvRowToSlot(c.format, src, 8, slot), 8u);
        }
      }
      if (pos == 4 && layer == 1) {
        // Not marked yet: neither readable nor committable.
        std::vector<float> rk(16), rv(16);
        ExpectError(cache.ReadKV(1, 1, 4, rk.data(), rv.data()),
                    StatusCode::kOutOfRange, "not written");
        ExpectError(cache.CommitTokens(1, 5), kBad, "never written");
      }
      ASSERT_TRUE(cache.MarkKvWritten(1, layer, pos).ok());
    }
  }
  // Taking a slot again clears the mark, as a failed rewrite by WriteKV.
  ASSERT_TRUE(cache.WritableKvRow(1, 0, 2, 1, KvPart::kV, &slot).ok());
  ExpectError(cache.CommitTokens(1, 5), kBad, "never written for layer 0");
  ASSERT_TRUE(cache.MarkKvWritten(1, 0, 2).ok());
  ASSERT_TRUE(cache.CommitTokens(1, 5).ok());
  std::vector<float> rk(16), rv(16), wk(16), wv(16);
  PagedKvCache ref;
  ASSERT_TRUE(PagedKvCache::Create(c, &ref).ok());
  ASSERT_TRUE(ref.AddSequence(1).ok());
  ASSERT_TRUE(ref.ReserveTokens(1, 1).ok());
  ASSERT_TRUE(ref.WriteKV(1, 0, 0, k.data(), v.data()).ok());
  ASSERT_TRUE(ref.ReadKV(1, 0, 0, wk.data(), wv.data()).ok());
  for (size_t pos = 0; pos < 5; ++pos) {
    ASSERT_TRUE(cache.ReadKV(1, 1, pos, rk.data(), rv.data()).ok());
    EXPECT_EQ(rk, wk);
    EXPECT_EQ(rv, wv);
  }
  // Committed positions are no longer writable.
  ExpectError(cache.WritableKvRow(1, 0, 0, 0, KvPart::kK, &slot), kBad,
              "already committed");
  ExpectError(cache.MarkKvWritten(1, 0, 0), kBad, "already committed");
  // WritablePosition: the same rows for one validation, same errors.
  ASSERT_TRUE(ref.WriteKV(1, 1, 0, k.data(), v.data()).ok());
  ASSERT_TRUE(ref.CommitTokens(1, 1).ok());
  ASSERT_TRUE(ref.ReserveTokens(1, 1).ok());
  KvPositionSlots rows;
  ExpectError(ref.WritablePosition(1, 0, 0, &rows), kBad, "already committed");
  ExpectError(ref.WritablePosition(1, 0, 2, &rows), StatusCode::kOutOfRange,
              "ReserveTokens");
  ExpectError(ref.WritablePosition(1, 0, 1, nullptr), kBad, "output is null");
  ASSERT_TRUE(ref.WriteKV(1, 1, 1, k.data(), v.data()).ok());
  ASSERT_TRUE(ref.WritablePosition(1, 1, 1, &rows).ok());
  for (size_t h = 0; h < 2; ++h) {
    for (KvPart part : {KvPart::kK, KvPart::kV}) {
      ASSERT_TRUE(ref.WritableKvRow(1, 1, 1, h, part, &slot).ok());
      EXPECT_EQ(rows.Row(h, part).values, slot.values);
      EXPECT_EQ(rows.Row(h, part).scale, slot.scale);
    }
  }
  // Taking the rows cleared the mark WriteKV had set.
  ExpectError(ref.ReadKV(1, 1, 1, rk.data(), rv.data()),
              StatusCode::kOutOfRange, "not written");
  ASSERT_TRUE(ref.MarkKvWritten(1, 1, 1).ok());
  ASSERT_TRUE(ref.ReadKV(1, 1, 1, rk.data(), rv.data()).ok());
  EXPECT_EQ(rk, wk);
  // Formats without scales give a null scale slot.
  c.format = KvFormat::kF16;
  PagedKvCache f16;
  ASSERT_TRUE(PagedKvCache::Create(c, &f16).ok());
  ASSERT_TRUE(f16.AddSequence(1).ok());
  ASSERT_TRUE(f16.ReserveTokens(1, 1).ok());
  ASSERT_TRUE(f16.WritableKvRow(1, 0, 0, 1, KvPart::kV, &slot).ok());
  EXPECT_EQ(slot.scale, nullptr);
  EXPECT_EQ(slot.values,
            f16.BlockData(0) + f16.layout().RowOffset(0, 1, KvPart::kV, 0));
}

// K rows are dim-major, so their slots are strided; storing through them
// with EncodeKvRowToSlot gives the bytes WriteKV gives, and an unstorable
// value reports its index past the first staging chunk.
TEST(KvCacheTest, StridedSlotsStoreWhatWriteKVStores) {
  for (KvFormat format : kAllKvFormats) {
    SCOPED_TRACE(GetKvFormatInfo(format).name);
    KvCacheConfig c;
    c.num_layers = 2;
    c.num_kv_heads = 2;
    c.head_dim = 300;  // more than one 256-value staging chunk
    c.block_tokens = 4;
    c.format = format;
    c.memory_budget_bytes = size_t{1} << 20;
    const size_t element = GetKvFormatInfo(format).element_bytes;
    PagedKvCache slots, ref;
    for (PagedKvCache* cache : {&slots, &ref}) {
      ASSERT_TRUE(PagedKvCache::Create(c, cache).ok());
      ASSERT_TRUE(cache->AddSequence(1).ok());
      ASSERT_TRUE(cache->ReserveTokens(1, 6).ok());
    }
    for (size_t pos = 0; pos < 5; ++pos) {
      for (size_t layer = 0; layer < 2; ++layer) {
        const std::vector<float> k = test::RandomValues(600, 10 * pos + layer);
        const std::vector<float> v = test::RandomValues(600, 99 + pos);
        ASSERT_TRUE(ref.WriteKV(1, layer, pos, k.data(), v.data()).ok());
        for (size_t h = 0; h < 2; ++h) {
          for (KvPart part : {KvPart::kK, KvPart::kV}) {
            KvRowSlot slot;
            ASSERT_TRUE(
                slots.WritableKvRow(1, layer, pos, h, part, &slot).ok());
            EXPECT_EQ(slot.value_stride,
                      part == KvPart::kK ? c.block_tokens * element : element);
            const float* src = (part == KvPart::kK ? k : v).data() + h * 300;
            ASSERT_EQ(EncodeKvRowToSlot(format, src, 300, slot), 300u);
          }
        }
        ASSERT_TRUE(slots.MarkKvWritten(1, layer, pos).ok());
      }
    }
    // Same page bytes for the 5 written positions (slots 0..3 of block 0,
    // slot 0 of block 1), and the same values read back.
    KvBlockTable a, b;
    ASSERT_TRUE(slots.BlockTable(1, &a).ok());
    ASSERT_TRUE(ref.BlockTable(1, &b).ok());
    const KvBlockLayout& l = slots.layout();
    for (size_t layer = 0; layer < 2; ++layer) {
      for (size_t h = 0; h < 2; ++h) {
        for (KvPart part : {KvPart::kK, KvPart::kV}) {
          const size_t off = l.ValuesOffset(layer, h, part);
          EXPECT_EQ(memcmp(slots.BlockData(a[0]) + off,
                           ref.BlockData(b[0]) + off, 4 * l.RowBytes()),
                    0);
          if (l.has_row_scales()) {
            const size_t so = l.ScalesOffset(layer, h, part);
            EXPECT_EQ(memcmp(slots.BlockData(a[0]) + so,
                             ref.BlockData(b[0]) + so, 4 * sizeof(float)),
                      0);
          }
        }
      }
    }
    std::vector<float> rk(600), rv(600), wk(600), wv(600);
    for (size_t pos = 0; pos < 5; ++pos) {
      ASSERT_TRUE(slots.ReadKV(1, 1, pos, rk.data(), rv.data()).ok());
      ASSERT_TRUE(ref.ReadKV(1, 1, pos, wk.data(), wv.data()).ok());
      EXPECT_EQ(rk, wk);
      EXPECT_EQ(rv, wv);
    }
    KvRowSlot slot;
    ASSERT_TRUE(slots.WritableKvRow(1, 0, 5, 1, KvPart::kK, &slot).ok());
    std::vector<float> bad = test::RandomValues(300, 7);
    bad[280] = INFINITY;
    EXPECT_EQ(EncodeKvRowToSlot(format, bad.data(), 300, slot), 280u);
  }
}

}  // namespace
}  // namespace qkern
