// Attention (qkern/kernels/attention.h) on every compiled SIMD target against
// the double-precision reference (attention_ref.h).
//
// The reference reads the cache's contents dequantized (ReadKV), so storage
// error is excluded and what is left is the kernel's f32 arithmetic. With
// u = 2^-24, gamma(n) = n u / (1 - n u), for one output element o of a row
// with attended positions t, softmax weights pi_t and values v_t:
//  - A logit is a dot of head_dim terms accumulated with FMA in lanes, a
//    horizontal sum (at most 5 adds deep), then one or two scale multiplies
//    (int8: scale * row scale). The reference's int8 values are fl(scale *
//    code), one more rounding per element. So |ds| <= gamma(head_dim + 6) * D
//    with D = |scale| max_t sum_d |q_d k_td|. Soft-capping x -> c tanh(x / c)
//    has slope <= 1 and adds c * (8u tanh ulp bound + u) + 2u |x| (reciprocal
//    and product roundings).
//  - A weight exp(s - m) then carries relative error <= ds + u |s - m|
//    (subtraction) + 2u (ExpNonPositive); each rescale of (acc, l) by
//    exp(m_old - m_new) adds <= 6u (exp, the argument, and the separate
//    roundings of acc and l), at most once per tile (the test counts more
//    tiles than there are); merging KV splits adds
//    one more exp (<= 2u + u |s - m|). Int8 V weights get one more product.
//    Call the total eta.
//  - Relative weight errors <= eta move o by <= 2 eta sum_t pi_t |v_t| (to
//    first order; the 5% slack covers the rest). Accumulating acc and l (FMA
//    chains as long as the KV range, plus per-tile sums) adds
//    2 gamma(kv_len + 64) sum_t pi_t |v_t|, and the final 1/l and product
//    2u |o| (4u to be safe).
// Terms whose exp falls below e^-87 of the largest may be flushed to 0 (or be
// subnormal); they move o by < kv_len e^-87 max|v|, far below the bound.
//
// Storage error, checked separately against the reference on the values
// before they were stored: f16 moves a value by <= 2^-11 |x| + 2^-25, int8 by
// <= S (1/2 + 2^-15) (S the row scale; tests/kv_cache_test.cc derives both).
// With Delta = max_t |scale| sum_d |q_d| e(k_td) every logit moves by <= Delta
// (soft-capping only shrinks this), weights by a factor within e^(+-2 Delta),
// so |o_stored - o| <= e^(2 Delta) sum_t pi_t e(v_t) +
// (e^(2 Delta) - 1) sum_t pi_t |v_t|.
#include "qkern/kernels/attention.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "qkern/kernels/attention_ref.h"
#include "qkern/kv/paged_kv_cache.h"
#include "qkern/threading/thread_pool.h"
#include "status_matchers.h"
#include "test_util.h"

namespace qkern {
namespace {

constexpr double kU = 1.0 / 16777216.0;  // f32 unit roundoff, 2^-24
constexpr size_t kLayers = 2;
constexpr size_t kTestLayer = 1;  // not layer 0, so layer offsets matter
constexpr KvSeqId kFillerBase = 1000000;

double Gamma(double n) { return n * kU / (1.0 - n * kU); }

std::string Describe(KvFormat format) { return GetKvFormatInfo(format).name; }

// A cache whose free list hands out blocks in shuffled order: every block is
// first taken by a one-block filler sequence, and the fillers are freed in
// random order. Sequences built afterwards get pages that are neither
// contiguous nor ascending.
PagedKvCache MakeScatteredCache(size_t num_kv_heads, size_t head_dim,
                                size_t block_tokens, KvFormat format,
                                size_t blocks, uint32_t seed) {
  KvCacheConfig config;
  config.num_layers = kLayers;
  config.num_kv_heads = num_kv_heads;
  config.head_dim = head_dim;
  config.block_tokens = block_tokens;
  config.format = format;
  KvBlockLayout layout;
  EXPECT_TRUE(KvBlockLayout::Compute(kLayers, num_kv_heads, head_dim,
                                     block_tokens, format, &layout)
                  .ok());
  config.memory_budget_bytes = blocks * layout.BlockBytes();
  PagedKvCache cache;
  const Status created = PagedKvCache::Create(config, &cache);
  EXPECT_TRUE(created.ok()) << created.message();
  std::vector<KvSeqId> fillers;
  for (size_t i = 0; i < blocks; ++i) {
    const KvSeqId id = kFillerBase + i;
    EXPECT_TRUE(cache.AddSequence(id).ok());
    EXPECT_TRUE(cache.ReserveTokens(id, 1).ok());
    fillers.push_back(id);
  }
  std::mt19937 rng(seed);
  std::shuffle(fillers.begin(), fillers.end(), rng);
  for (KvSeqId id : fillers) EXPECT_TRUE(cache.Free(id).ok());
  return cache;
}

// The values given to WriteKV for kTestLayer, [position][kv_head][head_dim].
struct Originals {
  std::vector<float> k, v;
};

// Cheap approximately gaussian values (Irwin-Hall sum of four 16-bit
// uniforms, unit variance), a fraction `outliers` of them times 30 (as real
// activations have; they stress the int8 row scales but make the softmax
// peaky). Building caches of thousands of positions per target with
// std::normal_distribution would dominate the test's run time.
class FastRandom {
 public:
  explicit FastRandom(uint64_t seed)
      : state_(seed * 0x9E3779B97F4A7C15ull + 1) {}

  void Fill(float* x, size_t n, float outliers) {
    const uint64_t outlier_below = static_cast<uint64_t>(outliers * 65536.0f);
    for (size_t i = 0; i < n; ++i) {
      const uint64_t r = Next();
      const int sum = static_cast<int>((r & 0xFFFF) + ((r >> 16) & 0xFFFF) +
                                       ((r >> 32) & 0xFFFF) + (r >> 48));
      // Mean 4 * 32767.5, variance 4 * 65536^2 / 12.
      float value =
          (static_cast<float>(sum) - 131070.0f) * (1.7320508f / 65536.0f);
      if ((Next() & 0xFFFF) < outlier_below) value *= 30.0f;
      x[i] = value;
    }
  }

 private:
  uint64_t Next() {  // splitmix64
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

// Appends n positions of random K/V (every layer) to `seq`; commits them
// unless `commit` is false (then they stay reserved and written, as in a
// prefill step that reads its own new positions).
void Append(PagedKvCache* cache, KvSeqId seq, size_t n, uint32_t seed,
            bool commit, Originals* originals, float outliers = 0.01f) {
  const size_t row = cache->RowFloats();
  size_t length = 0;
  ASSERT_TRUE(cache->Length(seq, &length).ok());
  const Status reserved = cache->ReserveTokens(seq, n);
  ASSERT_TRUE(reserved.ok()) << reserved.message();
  FastRandom random(seed);
  std::vector<float> k(row), v(row);
  for (size_t i = 0; i < n; ++i) {
    for (size_t layer = 0; layer < kLayers; ++layer) {
      random.Fill(k.data(), row, outliers);
      random.Fill(v.data(), row, outliers);
      ASSERT_TRUE(
          cache->WriteKV(seq, layer, length + i, k.data(), v.data()).ok());
      if (layer == kTestLayer && originals != nullptr) {
        originals->k.insert(originals->k.end(), k.begin(), k.end());
        originals->v.insert(originals->v.end(), v.begin(), v.end());
      }
    }
  }
  if (commit) {
    ASSERT_TRUE(cache->CommitTokens(seq, n).ok());
  }
}

// Bound on |stored - x| for the values of one row (kv_cache_test.cc).
void StorageBounds(KvFormat format, const float* x, size_t n, double* bound) {
  float amax = 0.0f;
  for (size_t i = 0; i < n; ++i) amax = std::max(amax, fabsf(x[i]));
  for (size_t i = 0; i < n; ++i) {
    switch (format) {
      case KvFormat::kF32:
        bound[i] = 0.0;
        break;
      case KvFormat::kF16:
        bound[i] = std::ldexp(fabs(static_cast<double>(x[i])), -11) +
                   std::ldexp(1.0, -25);
        break;
      case KvFormat::kInt8:
        bound[i] = amax < kKvInt8MinAmax ? amax
                                         : static_cast<double>(amax / 127.0f) *
                                               (0.5 + std::ldexp(1.0, -15));
        break;
    }
  }
}

// The double-precision reference is most of this test's time under qemu
// (every double operation is a soft-float call there), and its inputs are
// the same on every target. So results are kept per hash of everything the
// reference reads, and the targets after the first reuse them; a target
// whose cache stored a value differently hashes differently and gets its own
// reference.
struct ReferenceResult {
  std::vector<double> out;
  ref::AttentionTerms terms;
};

uint64_t HashFloats(uint64_t h, const float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits;
    memcpy(&bits, &x[i], sizeof(bits));
    h = (h ^ bits) * 0x100000001B3ull;
    h ^= h >> 29;
  }
  return h;
}

const ReferenceResult& Reference(const AttentionParams& p, const float* q,
                                 size_t num_queries, size_t q_start_pos,
                                 const float* k, const float* v) {
  static std::map<uint64_t, ReferenceResult>* results =
      new std::map<uint64_t, ReferenceResult>();
  const size_t kv_floats =
      (q_start_pos + num_queries) * p.num_kv_heads * p.head_dim;
  uint64_t h = 0xCBF29CE484222325ull;
  const size_t sizes[] = {p.num_q_heads,    p.num_kv_heads, p.head_dim,
                          p.sliding_window, p.q_stride,     num_queries,
                          q_start_pos};
  for (size_t size : sizes) h = (h ^ size) * 0x100000001B3ull;
  const float scalars[] = {p.scale, p.softcap};
  h = HashFloats(h, scalars, 2);
  if (p.sinks != nullptr) h = HashFloats(h, p.sinks, p.num_q_heads) ^ 1;
  h = HashFloats(h, q, num_queries * AttentionQStride(p));
  h = HashFloats(h, k, kv_floats);
  h = HashFloats(h, v, kv_floats);
  auto found = results->find(h);
  if (found != results->end()) return found->second;
  ReferenceResult& r = (*results)[h];
  r.out.resize(num_queries * p.num_q_heads * p.head_dim);
  ref::Attention(p, q, num_queries, q_start_pos, k, v, r.out.data(), &r.terms);
  return r;
}

struct RunSpec {
  AttentionParams params;
  size_t num_queries = 1;
  size_t q_start_pos = 0;
  float q_gain = 1.0f;  // larger: peakier softmax
  uint32_t seed = 1;
  const ParallelRunner* runner = nullptr;
  const Originals* originals = nullptr;  // enables the storage-error check
};

// Runs Attention on (cache, seq) and checks every output against the
// reference on the dequantized cache with the arithmetic bound above.
void RunAndCheck(const PagedKvCache& cache, KvSeqId seq, const RunSpec& spec) {
  const AttentionParams& p = spec.params;
  const size_t dim = p.head_dim;
  const size_t nq = spec.num_queries;
  const size_t kv_len = spec.q_start_pos + nq;
  const size_t q_stride = AttentionQStride(p);
  const size_t out_stride = AttentionOutStride(p);
  const size_t row = p.num_q_heads * dim;
  SCOPED_TRACE(Describe(cache.config().format) + " dim=" + std::to_string(dim) +
               " heads=" + std::to_string(p.num_q_heads) + "/" +
               std::to_string(p.num_kv_heads) +
               " block=" + std::to_string(cache.config().block_tokens) +
               " queries=" + std::to_string(nq) +
               " start=" + std::to_string(spec.q_start_pos) +
               " window=" + std::to_string(p.sliding_window) +
               " softcap=" + std::to_string(p.softcap) +
               " sinks=" + std::to_string(p.sinks != nullptr) +
               " threads=" + std::to_string(NumWorkers(spec.runner)));

  std::vector<float> q = test::RandomValues(nq * q_stride, spec.seed, 0.0f);
  for (float& x : q) x *= spec.q_gain;
  std::vector<float> out(nq * out_stride, NAN);
  AttentionWorkspace ws;
  const Status status =
      Attention(cache, seq, kTestLayer, q.data(), nq, spec.q_start_pos,
                out.data(), p, &ws, spec.runner);
  ASSERT_TRUE(status.ok()) << status.message();

  const size_t kv_row = cache.RowFloats();
  std::vector<float> k(kv_len * kv_row), v(kv_len * kv_row);
  for (size_t t = 0; t < kv_len; ++t) {
    ASSERT_TRUE(
        cache.ReadKV(seq, kTestLayer, t, &k[t * kv_row], &v[t * kv_row]).ok());
  }
  const ReferenceResult& reference =
      Reference(p, q.data(), nq, spec.q_start_pos, k.data(), v.data());
  const std::vector<double>& expected = reference.out;
  const ref::AttentionTerms& terms = reference.terms;

  const size_t block_tokens = cache.config().block_tokens;
  const double tiles =
      static_cast<double>(kv_len) / std::min<size_t>(block_tokens, 32) +
      static_cast<double>(kv_len) / block_tokens + 3;
  const double cap = p.softcap;
  const bool int8 = cache.config().format == KvFormat::kInt8;
  // Integer q.k (AttentionInt8IntegerDots): q~ = (amax / 16256) (128 hi +
  // lo) with |128 hi + lo - 128 x| <= 1/2 for x = q 127 / amax (x - hi is
  // exact); three roundings (127 / amax, q * that, the step) give
  // |q~ - q| <= amax / 32512 + 3.01 u |q| <= amax / 32000. The integer dot
  // is exact, and its conversion and two products are within gamma(dim + 6).
  // A logit moves by <= dq = |scale| max_t sum_d |k_td| amax / 32000
  // (soft-capping has slope <= 1), so the weights by a factor within
  // e^(+-2 (dq + eta)): expm1(2 (dq + eta)) replaces 2 eta below.
  //
  // Integer p.v (same targets and dims): per (row, tile of <= 64 positions)
  // the weights w_t = p_t * v_scale_t are rounded to int16 steps of M / 32767,
  // M the tile's largest w: c = round(w * fl(32767 / M)) is within 1/2 +
  // 2.01 u 32767 of w 32767 / M, so each w moves by <= 1.01 M / 65534.
  // Summing |dw_t| |code_td| <= 127 |dw_t| over a tile and bounding M by a
  // w of that tile gives, normalised like the output, <= 1.01 (64 / 65534)
  // sum_t pi_t max_d |v_td| per element (127 v_scale_t = max_d |v_td|). The
  // int32 sums are exact; their conversion and the step product add 2u to
  // the weights (eta).
  const bool quantized_q = int8 && AttentionInt8IntegerDots(dim);
  std::vector<double> k_l1(kv_len * p.num_kv_heads, 0.0);
  for (size_t t = 0; t < kv_len; ++t) {
    for (size_t kh = 0; kh < p.num_kv_heads; ++kh) {
      double sum = 0.0;
      for (size_t d = 0; d < dim; ++d) {
        sum += fabs(static_cast<double>(k[t * kv_row + kh * dim + d]));
      }
      k_l1[t * p.num_kv_heads + kh] = sum;
    }
  }
  const size_t group = p.num_q_heads / p.num_kv_heads;
  std::vector<double> arith_bound(nq * row);
  size_t failures = 0;
  for (size_t i = 0; i < nq; ++i) {
    for (size_t h = 0; h < p.num_q_heads; ++h) {
      const double dot_abs = terms.dot_abs[i * p.num_q_heads + h];
      const double logit_abs = terms.logit_abs[i * p.num_q_heads + h];
      double ds = Gamma(dim + 6) * dot_abs;
      if (cap > 0.0) ds += kU * (9.0 * cap + 2.0 * dot_abs);
      const double arg = 2.0 * logit_abs + ds;
      const double eta = ds + kU * arg + 2 * kU + 6 * kU * tiles +
                         (2 * kU + kU * arg) + (int8 ? kU : 0.0) +
                         (quantized_q ? 2 * kU : 0.0);
      double weights = 2 * eta;
      if (quantized_q) {
        const size_t pos = spec.q_start_pos + i;
        double amax = 0.0, k_max = 0.0;
        for (size_t d = 0; d < dim; ++d) {
          amax = std::max(
              amax, fabs(static_cast<double>(q[i * q_stride + h * dim + d])));
        }
        for (size_t t = AttentionWindowBegin(p, pos); t <= pos; ++t) {
          k_max = std::max(k_max, k_l1[t * p.num_kv_heads + h / group]);
        }
        const double dq = fabs(static_cast<double>(AttentionScale(p))) * k_max *
                          amax / 32000.0;
        weights = expm1(2 * (dq + eta));
      }
      const double pv_quant =
          quantized_q ? 1.01 * 64.0 / 65534.0 *
                            terms.weighted_amax[i * p.num_q_heads + h]
                      : 0.0;
      for (size_t d = 0; d < dim; ++d) {
        const size_t idx = (i * p.num_q_heads + h) * dim + d;
        const double o = expected[idx];
        const double bound =
            1.05 * (weights + 2 * Gamma(kv_len + 64)) * terms.out_abs[idx] +
            1.05 * pv_quant + 4 * kU * fabs(o) + 1e-30;
        arith_bound[idx] = bound;
        const double got = out[i * out_stride + h * dim + d];
        if (!(fabs(got - o) <= bound) && ++failures <= 5) {
          ADD_FAILURE() << "query " << i << " head " << h << " d " << d
                        << ": got " << got << " expected " << o << " bound "
                        << bound;
        }
      }
    }
    for (size_t j = row; j < out_stride; ++j) {
      if (!isnan(out[i * out_stride + j]) && ++failures <= 5) {
        ADD_FAILURE() << "query " << i << " wrote padding column " << j;
      }
    }
  }
  EXPECT_EQ(failures, 0u);

  if (spec.originals == nullptr || cache.config().format == KvFormat::kF32) {
    return;
  }
  // Storage error: compare with the reference on the values before storage.
  const Originals& orig = *spec.originals;
  ASSERT_GE(orig.k.size(), kv_len * kv_row);
  std::vector<double> ek(kv_len * kv_row), ev(kv_len * kv_row);
  for (size_t t = 0; t < kv_len; ++t) {
    for (size_t kh = 0; kh < p.num_kv_heads; ++kh) {
      const size_t o = t * kv_row + kh * dim;
      StorageBounds(cache.config().format, &orig.k[o], dim, &ek[o]);
      StorageBounds(cache.config().format, &orig.v[o], dim, &ev[o]);
    }
  }
  std::vector<float> ev_f(ev.begin(), ev.end());
  const ReferenceResult& unstored = Reference(p, q.data(), nq, spec.q_start_pos,
                                              orig.k.data(), orig.v.data());
  const std::vector<double>& exact = unstored.out;
  const ref::AttentionTerms& orig_terms = unstored.terms;
  const std::vector<double>& weighted_ev =
      Reference(p, q.data(), nq, spec.q_start_pos, orig.k.data(), ev_f.data())
          .out;
  const double scale = fabs(AttentionScale(p));
  failures = 0;
  for (size_t i = 0; i < nq; ++i) {
    const size_t pos = spec.q_start_pos + i;
    for (size_t h = 0; h < p.num_q_heads; ++h) {
      const float* qi = &q[i * q_stride + h * dim];
      double delta = 0.0;
      for (size_t t = AttentionWindowBegin(p, pos); t <= pos; ++t) {
        const double* e = &ek[t * kv_row + (h / group) * dim];
        double sum = 0.0;
        for (size_t d = 0; d < dim; ++d) sum += fabs(qi[d]) * e[d];
        delta = std::max(delta, scale * sum);
      }
      const double grow = exp(2 * delta);
      for (size_t d = 0; d < dim; ++d) {
        const size_t idx = (i * p.num_q_heads + h) * dim + d;
        // ev was rounded to f32 for the reference: allow for that too.
        const double bound = 1.01 * (grow * weighted_ev[idx] +
                                     (grow - 1) * orig_terms.out_abs[idx]) +
                             arith_bound[idx];
        const double got = out[i * out_stride + h * dim + d];
        if (!(fabs(got - exact[idx]) <= bound) && ++failures <= 5) {
          ADD_FAILURE() << "storage check: query " << i << " head " << h
                        << " d " << d << ": got " << got << " unstored "
                        << exact[idx] << " bound " << bound;
        }
      }
    }
  }
  EXPECT_EQ(failures, 0u);
}

AttentionParams Heads(size_t kv_heads, size_t ratio, size_t dim) {
  AttentionParams p;
  p.num_kv_heads = kv_heads;
  p.num_q_heads = kv_heads * ratio;
  p.head_dim = dim;
  return p;
}

size_t BlocksFor(size_t tokens, size_t block_tokens) {
  return (tokens + block_tokens - 1) / block_tokens;
}

ThreadPool& Pool3() {
  static ThreadPool* pool = new ThreadPool(3);
  return *pool;
}

class AttentionTest : public test::PerTarget {};

// Decode (one query at the last position) over every context length, head
// dim, GQA ratio, block size and format, on one thread and on a pool (split
// KV ranges plus the merge).
TEST_P(AttentionTest, Decode) {
  const size_t contexts[] = {1, 2, 15, 16, 17, 1000, 4096};
  const size_t dims[] = {64, 80, 96, 128, 256};
  const size_t ratios[] = {1, 3, 4, 8};
  const ParallelRunner pool = Pool3().Runner();
  size_t index = 0;
  for (size_t ci = 0; ci < sizeof(contexts) / sizeof(contexts[0]); ++ci) {
    const size_t context = contexts[ci];
    for (size_t fi = 0; fi < 3; ++fi) {
      const KvFormat format = kAllKvFormats[fi];
      const size_t i = index++;
      // Under qemu the long contexts run for one format each.
      if (test::UnderEmulation() && context >= 1000 && fi != ci % 3) continue;
      const size_t dim = dims[i % 5];
      const size_t ratio = ratios[i % 4];
      const size_t kv_heads = 1 + i % 3;
      const size_t block_tokens = i % 2 ? 16 : 32;
      PagedKvCache cache = MakeScatteredCache(
          kv_heads, dim, block_tokens, format,
          BlocksFor(context, block_tokens) + 3, static_cast<uint32_t>(i));
      const KvSeqId seq = 7;
      ASSERT_TRUE(cache.AddSequence(seq).ok());
      Originals originals;
      Append(&cache, seq, context, 100 + i, /*commit=*/true, &originals);
      RunSpec spec;
      spec.params = Heads(kv_heads, ratio, dim);
      spec.num_queries = 1;
      spec.q_start_pos = context - 1;
      spec.q_gain = i % 3 == 0 ? 3.0f : 1.0f;
      spec.seed = 200 + i;
      spec.originals = &originals;
      RunAndCheck(cache, seq, spec);
      spec.runner = &pool;
      RunAndCheck(cache, seq, spec);
    }
  }
}

// Prefill: many queries with the causal mask, from position 0 and chunked
// (continuing after committed positions), with the new positions committed
// or only reserved and written; on one thread and on a pool.
TEST_P(AttentionTest, Prefill) {
  struct Case {
    size_t queries, start, dim, kv_heads, ratio, block_tokens;
  };
  std::vector<Case> cases = {
      {7, 0, 64, 2, 4, 16},    {33, 0, 80, 1, 8, 32}, {16, 17, 96, 3, 3, 16},
      {17, 15, 128, 2, 1, 32}, {2, 1, 256, 1, 1, 16}, {64, 200, 64, 3, 3, 32},
  };
  if (!test::UnderEmulation()) cases.push_back({100, 900, 128, 2, 4, 16});
  const ParallelRunner pool = Pool3().Runner();
  for (size_t c = 0; c < cases.size(); ++c) {
    const Case& k = cases[c];
    const KvFormat format = kAllKvFormats[c % 3];
    const size_t total = k.start + k.queries;
    PagedKvCache cache = MakeScatteredCache(
        k.kv_heads, k.dim, k.block_tokens, format,
        BlocksFor(total, k.block_tokens) + 2, static_cast<uint32_t>(c));
    const KvSeqId seq = 3;
    ASSERT_TRUE(cache.AddSequence(seq).ok());
    Originals originals;
    Append(&cache, seq, k.start, 300 + c, /*commit=*/true, &originals);
    Append(&cache, seq, k.queries, 400 + c, /*commit=*/c % 2 == 0, &originals);
    RunSpec spec;
    spec.params = Heads(k.kv_heads, k.ratio, k.dim);
    spec.num_queries = k.queries;
    spec.q_start_pos = k.start;
    spec.q_gain = c % 2 ? 2.0f : 1.0f;
    spec.seed = 500 + c;
    RunAndCheck(cache, seq, spec);
    spec.runner = &pool;
    RunAndCheck(cache, seq, spec);
  }
}

// Head dims that are not a multiple of the vector length take the scalar
// tails of the dot and accumulate loops.
TEST_P(AttentionTest, OddHeadDims) {
  const ParallelRunner pool = Pool3().Runner();
  const size_t dims[] = {1, 3, 20, 72, 100};
  for (size_t c = 0; c < 5; ++c) {
    const KvFormat format = kAllKvFormats[c % 3];
    PagedKvCache cache = MakeScatteredCache(2, dims[c], 16, format, 20,
                                            static_cast<uint32_t>(c));
    ASSERT_TRUE(cache.AddSequence(2).ok());
    Originals originals;
    Append(&cache, 2, 300, 50 + c, true, &originals);
    RunSpec spec;
    spec.params = Heads(2, 2, dims[c]);
    spec.num_queries = 1;
    spec.q_start_pos = 299;
    spec.seed = 60 + c;
    spec.originals = &originals;
    RunAndCheck(cache, 2, spec);
    spec.runner = &pool;
    RunAndCheck(cache, 2, spec);
    spec.num_queries = 13;
    spec.q_start_pos = 287;
    RunAndCheck(cache, 2, spec);
  }
}

// Blocks whose size is odd or not a multiple of 16: tiles span several
// short segments, so the dot kernels' 16-position passes and the integer
// p.v's position pairs end inside a block (the int8 integer paths use head
// dims that are multiples of 64).
TEST_P(AttentionTest, OddBlockSizes) {
  const ParallelRunner pool = Pool3().Runner();
  const size_t block_sizes[] = {1, 5, 7, 24};
  for (size_t c = 0; c < 4; ++c) {
    const KvFormat format = c % 2 ? KvFormat::kF16 : KvFormat::kInt8;
    const size_t dim = c < 2 ? 64 : 128;
    const size_t bt = block_sizes[c];
    PagedKvCache cache =
        MakeScatteredCache(2, dim, bt, format, BlocksFor(203, bt) + 2,
                           static_cast<uint32_t>(70 + c));
    ASSERT_TRUE(cache.AddSequence(4).ok());
    Originals originals;
    Append(&cache, 4, 203, 80 + c, true, &originals);
    RunSpec spec;
    spec.params = Heads(2, 4, dim);
    spec.num_queries = 1;
    spec.q_start_pos = 202;
    spec.seed = 90 + c;
    spec.originals = &originals;
    RunAndCheck(cache, 4, spec);
    spec.runner = &pool;
    RunAndCheck(cache, 4, spec);
    spec.num_queries = 13;
    spec.q_start_pos = 190;
    RunAndCheck(cache, 4, spec);
  }
}

// q read from a wider (fused QKV-like) buffer and out written with a stride;
// the columns between rows must stay untouched.
TEST_P(AttentionTest, Strides) {
  PagedKvCache cache =
      MakeScatteredCache(2, 64, 16, KvFormat::kF16, 6, /*seed=*/5);
  ASSERT_TRUE(cache.AddSequence(1).ok());
  Append(&cache, 1, 40, 11, true, nullptr);
  RunSpec spec;
  spec.params = Heads(2, 3, 64);
  spec.params.q_stride = 6 * 64 + 2 * 2 * 64 + 5;
  spec.params.out_stride = 6 * 64 + 3;
  spec.num_queries = 9;
  spec.q_start_pos = 31;
  RunAndCheck(cache, 1, spec);
}

// Sliding window, soft-capping, sinks and a custom scale, alone and
// together, in decode and prefill, with and without the pool. The long
// windowed decode on the pool cuts split ranges at the window start; the
// 128-token blocks make a split with no blocks at all.
TEST_P(AttentionTest, Options) {
  struct Case {
    size_t window;
    float softcap;
    bool sinks;
    float scale;
    size_t context, queries, block_tokens;
    KvFormat format;
  };
  const size_t long_context = test::UnderEmulation() ? 600 : 1000;
  const Case cases[] = {
      {1, 0, false, 0, 40, 1, 16, KvFormat::kF32},
      {5, 0, false, 0, 100, 20, 16, KvFormat::kF16},
      {100, 0, false, 0, 300, 1, 32, KvFormat::kInt8},
      {520, 0, false, 0, long_context, 1, 32, KvFormat::kF16},
      {0, 5.0f, false, 0, 300, 1, 16, KvFormat::kF32},
      {0, 30.0f, false, 0, 90, 30, 32, KvFormat::kInt8},
      {0, 0, true, 0, 200, 1, 16, KvFormat::kF16},
      {0, 0, true, 0, 60, 25, 16, KvFormat::kF32},
      {0, 0, false, 0.3f, 150, 3, 32, KvFormat::kInt8},
      {64, 8.0f, true, 0.2f, 500, 1, 16, KvFormat::kInt8},
      {33, 8.0f, true, 0, 120, 50, 32, KvFormat::kF16},
      {0, 0, true, 0, 600, 1, 128, KvFormat::kF32},
  };
  const ParallelRunner pool = Pool3().Runner();
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); ++c) {
    const Case& k = cases[c];
    const size_t kv_heads = 1 + c % 2, ratio = c % 3 == 0 ? 4 : 3, dim = 64;
    PagedKvCache cache = MakeScatteredCache(
        kv_heads, dim, k.block_tokens, k.format,
        BlocksFor(k.context, k.block_tokens) + 2, static_cast<uint32_t>(c));
    ASSERT_TRUE(cache.AddSequence(9).ok());
    Originals originals;
    // No outliers: a flat softmax lets the options (sinks above all) show.
    Append(&cache, 9, k.context, 600 + c, true, &originals, 0.0f);
    std::vector<float> sinks(kv_heads * ratio);
    std::mt19937 rng(c);
    // Sinks comparable to the rest of the denominator (about context * e^1/2
    // for unit-variance logits), so that they visibly matter.
    const float log_context = logf(static_cast<float>(k.context));
    std::uniform_real_distribution<float> sink_dist(log_context - 1.0f,
                                                    log_context + 3.0f);
    for (float& s : sinks) s = sink_dist(rng);
    RunSpec spec;
    spec.params = Heads(kv_heads, ratio, dim);
    spec.params.sliding_window = k.window;
    spec.params.softcap = k.softcap;
    spec.params.sinks = k.sinks ? sinks.data() : nullptr;
    spec.params.scale = k.scale;
    spec.num_queries = k.queries;
    spec.q_start_pos = k.context - k.queries;
    spec.q_gain = k.softcap > 0 ? 3.0f : 1.0f;
    spec.seed = 700 + c;
    spec.originals = &originals;
    RunAndCheck(cache, 9, spec);
    spec.runner = &pool;
    RunAndCheck(cache, 9, spec);
  }
}

// Forked sequences share their prefix blocks (the last one partly filled and
// then copied on write); each must see its own continuation.
TEST_P(AttentionTest, ForkedSequences) {
  for (KvFormat format : kAllKvFormats) {
    PagedKvCache cache = MakeScatteredCache(2, 96, 16, format, 12, 21);
    ASSERT_TRUE(cache.AddSequence(1).ok());
    Originals parent, child;
    Append(&cache, 1, 40, 31, true, &parent);
    ASSERT_TRUE(cache.Fork(1, 2).ok());
    child = parent;
    Append(&cache, 2, 25, 32, true, &child);
    Append(&cache, 1, 10, 33, true, &parent);
    const ParallelRunner pool = Pool3().Runner();
    RunSpec spec;
    spec.params = Heads(2, 4, 96);
    spec.q_start_pos = 64;
    spec.originals = &child;
    RunAndCheck(cache, 2, spec);
    spec.runner = &pool;
    spec.num_queries = 20;
    spec.q_start_pos = 45;
    RunAndCheck(cache, 2, spec);
    spec.num_queries = 1;
    spec.q_start_pos = 49;
    spec.originals = &parent;
    RunAndCheck(cache, 1, spec);
  }
}

// With q = 0 every logit is 0 and every weight exp(0) = 1 exactly, so the
// output is the plain mean of V over the attended positions. With small
// integer V (one entry of 127 per row, so the int8 row scale is exactly 1)
// the kernel's sums are exact in f32 and only the final division and the
// split merge round: |o - mean| <= (splits + 2) u mean_t |v_t| with at most
// 24 splits here (one kv head at 4096 positions on 3 workers). Dropping,
// repeating or misplacing any one position moves o by >= 1 / count, which at
// 4096 positions is ~20x that bound; the general bound above cannot see so
// small a change at long contexts.
TEST_P(AttentionTest, ExactMeanOfValues) {
  const ParallelRunner pool = Pool3().Runner();
  const size_t dim = 64;
  const size_t contexts[] = {17, 1000, 4096};
  for (size_t c = 0; c < 3; ++c) {
    const size_t context = contexts[c];
    for (size_t fi = 0; fi < 3; ++fi) {
      if (test::UnderEmulation() && context == 4096 && fi != 2) continue;
      const KvFormat format = kAllKvFormats[fi];
      const size_t kv_heads = 1 + fi % 2, block_tokens = c % 2 ? 16 : 32;
      PagedKvCache cache = MakeScatteredCache(
          kv_heads, dim, block_tokens, format,
          BlocksFor(context, block_tokens) + 2, static_cast<uint32_t>(c + fi));
      ASSERT_TRUE(cache.AddSequence(4).ok());
      ASSERT_TRUE(cache.ReserveTokens(4, context).ok());
      const size_t row = cache.RowFloats();
      // v[pos][head][d]: integers in [-8, 8] that differ between positions.
      auto value = [&](size_t pos, size_t i) -> float {
        if (i % dim == 0) return 127.0f;
        return static_cast<float>(
            static_cast<int>((pos * 7 + i * 3 + pos / 5) % 17) - 8);
      };
      std::vector<float> k_row(row), v_row(row);
      std::mt19937 rng(static_cast<uint32_t>(c));
      std::normal_distribution<float> normal;
      for (size_t pos = 0; pos < context; ++pos) {
        for (size_t i = 0; i < row; ++i) {
          k_row[i] = normal(rng);
          v_row[i] = value(pos, i);
        }
        for (size_t layer = 0; layer < kLayers; ++layer) {
          ASSERT_TRUE(
              cache.WriteKV(4, layer, pos, k_row.data(), v_row.data()).ok());
        }
      }
      ASSERT_TRUE(cache.CommitTokens(4, context).ok());
      // Prefix sums of v and |v| over positions, per element.
      std::vector<double> prefix((context + 1) * row, 0.0), abs_prefix = prefix;
      for (size_t pos = 0; pos < context; ++pos) {
        for (size_t i = 0; i < row; ++i) {
          prefix[(pos + 1) * row + i] = prefix[pos * row + i] + value(pos, i);
          abs_prefix[(pos + 1) * row + i] =
              abs_prefix[pos * row + i] + fabs(value(pos, i));
        }
      }
      for (size_t window : {size_t{0}, size_t{300}}) {
        // 40 queries make 8 query tiles (5 queries of 3 heads each); under
        // qemu the longest context takes 17 (4 tiles, the last one partial).
        const size_t many = test::UnderEmulation() && context > 1000 ? 17 : 40;
        for (size_t queries : {size_t{1}, std::min(context, many)}) {
          for (const ParallelRunner* runner :
               {static_cast<const ParallelRunner*>(nullptr), &pool}) {
            SCOPED_TRACE(Describe(format) +
                         " context=" + std::to_string(context) +
                         " window=" + std::to_string(window) +
                         " queries=" + std::to_string(queries) +
                         " threads=" + std::to_string(NumWorkers(runner)));
            AttentionParams p = Heads(kv_heads, 3, dim);
            p.sliding_window = window;
            const size_t start = context - queries;
            const std::vector<float> q(queries * p.num_q_heads * dim, 0.0f);
            std::vector<float> out(q.size(), NAN);
            AttentionWorkspace ws;
            ASSERT_TRUE(Attention(cache, 4, kTestLayer, q.data(), queries,
                                  start, out.data(), p, &ws, runner)
                            .ok());
            size_t failures = 0;
            for (size_t i = 0; i < queries; ++i) {
              const size_t pos = start + i;
              const size_t first = AttentionWindowBegin(p, pos);
              for (size_t h = 0; h < p.num_q_heads; ++h) {
                for (size_t d = 0; d < dim; ++d) {
                  const size_t e = (h / 3) * dim + d;
                  const double sum =
                      prefix[(pos + 1) * row + e] - prefix[first * row + e];
                  const double abs_sum = abs_prefix[(pos + 1) * row + e] -
                                         abs_prefix[first * row + e];
                  const double count = static_cast<double>(pos + 1 - first);
                  const double got = out[(i * p.num_q_heads + h) * dim + d];
                  if (!(fabs(got - sum / count) <= 26 * kU * abs_sum / count) &&
                      ++failures <= 5) {
                    ADD_FAILURE()
                        << "query " << i << " head " << h << " d " << d
                        << ": got " << got << " expected " << sum / count;
                  }
                }
              }
            }
            EXPECT_EQ(failures, 0u);
          }
        }
      }
    }
  }
}

// A tile whose logits all overflow to -inf for one query row (|q.k| past
// f32 range) gives that row no weight, while the rows sharing its kv head
// attend as usual: the 4-row softmax hands such a group back to the
// row-by-row path. In double the reference gets weights exp(-1e39) = 0 for
// the tile and a one-hot row 0 (its other logits differ by >= 1e17).
TEST_P(AttentionTest, TileOfOverflowedLogitsGetsNoWeight) {
  const ParallelRunner pool = Pool3().Runner();
  // The overflow fills the first whole kernel tile; two more follow.
  const size_t tile = detail::kAttnTileTokens;
  const size_t dim = 64, context = 3 * tile, block_tokens = 16;
  // f16 cannot store the 1e20 components; f32 and int8 can.
  for (KvFormat format : {KvFormat::kF32, KvFormat::kInt8}) {
    PagedKvCache cache = MakeScatteredCache(
        1, dim, block_tokens, format, BlocksFor(context, block_tokens) + 1, 3);
    ASSERT_TRUE(cache.AddSequence(2).ok());
    ASSERT_TRUE(cache.ReserveTokens(2, context).ok());
    // v: integers in [-8, 8] with 127 at dim 0 (exact in every format).
    auto value = [&](size_t pos, size_t d) -> float {
      if (d == 0) return 127.0f;
      return static_cast<float>(static_cast<int>((pos * 5 + d * 3) % 17) - 8);
    };
    std::vector<float> k_row(dim, 0.0f), v_row(dim);
    for (size_t pos = 0; pos < context; ++pos) {
      // Only dim 0 of K is non-zero: -1e20 in the first tile, then
      // increasing, so q = 1e20 e0 peaks at the last position.
      k_row[0] = pos < tile ? -1e20f : 1.0f + static_cast<float>(pos) / 256.0f;
      for (size_t d = 0; d < dim; ++d) v_row[d] = value(pos, d);
      for (size_t layer = 0; layer < kLayers; ++layer) {
        ASSERT_TRUE(
            cache.WriteKV(2, layer, pos, k_row.data(), v_row.data()).ok());
      }
    }
    ASSERT_TRUE(cache.CommitTokens(2, context).ok());
    const AttentionParams p = Heads(1, 4, dim);
    // Row 0 meets the overflow; rows 1-3 (q = 0) weigh every position alike.
    std::vector<float> q(4 * dim, 0.0f), out(4 * dim, NAN);
    q[0] = 1e20f;
    for (const ParallelRunner* runner :
         {static_cast<const ParallelRunner*>(nullptr), &pool}) {
      SCOPED_TRACE(Describe(format) +
                   " threads=" + std::to_string(NumWorkers(runner)));
      AttentionWorkspace ws;
      ASSERT_TRUE(Attention(cache, 2, kTestLayer, q.data(), 1, context - 1,
                            out.data(), p, &ws, runner)
                      .ok());
      for (size_t d = 0; d < dim; ++d) {
        const double last = value(context - 1, d);
        EXPECT_NEAR(out[d], last, 26 * kU * fabs(last)) << "row 0 d " << d;
        double sum = 0.0, abs_sum = 0.0;
        for (size_t pos = 0; pos < context; ++pos) {
          sum += value(pos, d);
          abs_sum += fabs(value(pos, d));
        }
        for (size_t h = 1; h < 4; ++h) {
          EXPECT_NEAR(out[h * dim + d], sum / context,
                      26 * kU * abs_sum / context)
              << "row " << h << " d " << d;
        }
      }
    }
  }
}

// A decode loop reuses its workspace: after the first call it never grows.
TEST_P(AttentionTest, WorkspaceIsReused) {
  PagedKvCache cache = MakeScatteredCache(3, 64, 16, KvFormat::kInt8, 40, 3);
  ASSERT_TRUE(cache.AddSequence(5).ok());
  const AttentionParams params = Heads(3, 3, 64);
  const ParallelRunner pool = Pool3().Runner();
  AttentionWorkspace ws;
  std::vector<float> q(9 * 64, 0.5f), out(9 * 64);
  const void* data = nullptr;
  size_t size = 0;
  // The KV range gets one more split per 128 positions, up to the plan's
  // limit (4 here): 600 steps go through 1 to 4 splits, under qemu 384
  // through 1 to 3.
  const size_t steps = test::UnderEmulation() ? 384 : 600;
  for (size_t step = 0; step < steps; ++step) {
    Append(&cache, 5, 1, static_cast<uint32_t>(step), true, nullptr);
    ASSERT_TRUE(Attention(cache, 5, kTestLayer, q.data(), 1, step, out.data(),
                          params, &ws, &pool)
                    .ok());
    if (step == 0) {
      data = ws.data();
      size = ws.size();
    }
    ASSERT_EQ(ws.data(), data);
    ASSERT_EQ(ws.size(), size);
  }
}

// The plan splits long KV ranges twice as finely, within a workspace that
// is the same for every kv_len (so a decoder's never grows past 4096).
TEST(AttentionPlanTest, LongRangesSplitFinerInAFixedWorkspace) {
  // Llama-3.2-1B decode on 2 workers: 8 whole-range tasks up to 4095
  // positions, 2 splits each from 4096.
  const AttentionParams llama = Heads(8, 4, 64);
  EXPECT_EQ(detail::PlanAttention(llama, 1, 4094, 2).splits, 1u);
  EXPECT_EQ(detail::PlanAttention(llama, 1, 4095, 2).splits, 2u);
  // SmolLM2 (3 kv heads): 4 splits, then 6 (18 tasks, 9 per worker).
  const AttentionParams smol = Heads(3, 3, 64);
  EXPECT_EQ(detail::PlanAttention(smol, 1, 2047, 2).splits, 4u);
  EXPECT_EQ(detail::PlanAttention(smol, 1, 8191, 2).splits, 6u);
  for (const AttentionParams& p : {llama, smol, Heads(1, 8, 128)}) {
    for (size_t workers : {1, 2, 3, 8}) {
      for (size_t queries : {1, 7, 40}) {
        const size_t bytes =
            detail::PlanAttention(p, queries, 0, workers).workspace_bytes;
        for (size_t start : {0, 127, 1000, 4095, 4096, 40000, 1000000}) {
          const detail::AttentionPlan plan =
              detail::PlanAttention(p, queries, start, workers);
          SCOPED_TRACE("workers=" + std::to_string(workers) +
                       " queries=" + std::to_string(queries) +
                       " start=" + std::to_string(start));
          EXPECT_EQ(plan.workspace_bytes, bytes);
          if (plan.splits > 1) {
            EXPECT_LE(plan.num_tasks, plan.partial_tasks);
          }
        }
      }
    }
  }
}

using test::ExpectError;
using test::Mentions;

// Bad input is rejected at the boundary with a message naming the value and
// the limit, before anything is read.
TEST_P(AttentionTest, BadInput) {
  PagedKvCache cache = MakeScatteredCache(2, 64, 16, KvFormat::kF16, 8, 4);
  ASSERT_TRUE(cache.AddSequence(1).ok());
  Append(&cache, 1, 20, 1, true, nullptr);
  const AttentionParams good = Heads(2, 2, 64);
  std::vector<float> q(64 * 4 * 8, 0.1f), out(64 * 4 * 8);
  AttentionWorkspace ws;
  auto run = [&](const AttentionParams& p, KvSeqId seq = 1, size_t layer = 1,
                 size_t nq = 1, size_t start = 19) {
    return Attention(cache, seq, layer, q.data(), nq, start, out.data(), p,
                     &ws);
  };
  ASSERT_TRUE(run(good).ok());
  ExpectError(run(good, 99), StatusCode::kInvalidArgument,
              "unknown sequence id 99");
  ExpectError(run(good, 1, 2), StatusCode::kOutOfRange, "layer 2");
  ExpectError(run(good, 1, 1, 2, 19), StatusCode::kOutOfRange, "holds 20");
  ExpectError(run(good, 1, 1, 1, 20), StatusCode::kOutOfRange, "holds 20");

  AttentionParams p = good;
  p.num_q_heads = 5;
  ExpectError(run(p), StatusCode::kInvalidArgument,
              "num_q_heads = 5 is not a multiple of num_kv_heads = 2");
  p = good;
  p.num_q_heads = 0;
  ExpectError(run(p), StatusCode::kInvalidArgument, "num_q_heads = 0");
  p = good;
  p.num_kv_heads = 4;
  p.num_q_heads = 4;
  ExpectError(run(p), StatusCode::kInvalidArgument,
              "num_kv_heads = 4 but the KV cache has 2");
  p = good;
  p.head_dim = 128;
  ExpectError(run(p), StatusCode::kInvalidArgument,
              "head_dim = 128 but the KV cache has 64");
  p = good;
  p.scale = NAN;
  ExpectError(run(p), StatusCode::kInvalidArgument, "scale");
  p = good;
  p.softcap = -1.0f;
  ExpectError(run(p), StatusCode::kInvalidArgument, "softcap = -1");
  p = good;
  p.q_stride = 100;
  ExpectError(run(p), StatusCode::kInvalidArgument, "q_stride = 100");
  p = good;
  p.out_stride = 255;
  ExpectError(run(p), StatusCode::kInvalidArgument, "out_stride = 255");
  const float bad_sinks[4] = {0.0f, 1.0f, INFINITY, 0.0f};
  p = good;
  p.sinks = bad_sinks;
  ExpectError(run(p), StatusCode::kInvalidArgument, "sinks[2]");

  ExpectError(Attention(cache, 1, 1, nullptr, 1, 19, out.data(), good, &ws),
              StatusCode::kInvalidArgument, "q is null");
  ExpectError(Attention(cache, 1, 1, q.data(), 1, 19, nullptr, good, &ws),
              StatusCode::kInvalidArgument, "out is null");
  ExpectError(
      Attention(cache, 1, 1, q.data(), 1, 19, out.data(), good, nullptr),
      StatusCode::kInvalidArgument, "workspace is null");
  ExpectError(
      Attention(cache, 1, 1, q.data(), SIZE_MAX, 19, out.data(), good, &ws),
      StatusCode::kOutOfRange, "holds 20");
  // Zero queries: nothing to do, but the shape is still checked.
  EXPECT_TRUE(run(good, 1, 1, 0, 0).ok());
  p = good;
  p.num_q_heads = 3;
  ExpectError(run(p, 1, 1, 0, 0), StatusCode::kInvalidArgument, "multiple");

  // Caller-provided block tables: entries out of range, free, or too few.
  KvBlockTable table;
  ASSERT_TRUE(cache.BlockTable(1, &table).ok());
  std::vector<uint32_t> own(table.begin(), table.end());
  ASSERT_TRUE(AttentionWithBlockTable(cache, own.data(), own.size(), 1,
                                      q.data(), 1, 19, out.data(), good, &ws)
                  .ok());
  std::vector<uint32_t> bad = own;
  bad[1] = 12345;
  ExpectError(AttentionWithBlockTable(cache, bad.data(), bad.size(), 1,
                                      q.data(), 1, 19, out.data(), good, &ws),
              StatusCode::kOutOfRange,
              "block table entry 1: block index 12345 is out of range");
  bad = own;
  uint32_t free_block = 0;
  while (cache.pool().RefCount(free_block) != 0) ++free_block;
  bad[0] = free_block;
  ExpectError(AttentionWithBlockTable(cache, bad.data(), bad.size(), 1,
                                      q.data(), 1, 19, out.data(), good, &ws),
              StatusCode::kInvalidArgument, "is free");
  ExpectError(AttentionWithBlockTable(cache, own.data(), 1, 1, q.data(), 1, 19,
                                      out.data(), good, &ws),
              StatusCode::kOutOfRange, "block table has 1 entries");
  ExpectError(AttentionWithBlockTable(cache, nullptr, 2, 1, q.data(), 1, 19,
                                      out.data(), good, &ws),
              StatusCode::kInvalidArgument, "block table is null");

  PagedKvCache empty;
  ExpectError(Attention(empty, 1, 0, q.data(), 1, 0, out.data(), good, &ws),
              StatusCode::kInvalidArgument, "unknown sequence id 1");
  ExpectError(AttentionWithBlockTable(empty, own.data(), own.size(), 0,
                                      q.data(), 1, 0, out.data(), good, &ws),
              StatusCode::kInvalidArgument, "KV cache is empty");
}

QKERN_INSTANTIATE_PER_TARGET(AttentionTest);

}  // namespace
}  // namespace qkern
