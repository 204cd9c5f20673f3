// Sampler: greedy, each filter's cut, the drawn distribution against an
// independent reference (full sort in double), repetition penalty,
// determinism, and errors for bad configs and bad logits.
#include "qkern/model/sampler.h"

#include <gtest/gtest.h>
#include <math.h>
#include <stdint.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <new>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "status_matchers.h"
#include "test_util.h"

// Counts heap allocations, to check that Sample() makes none. Not under
// ASan, which owns operator new itself (mixing the two is reported as an
// alloc-dealloc mismatch).
static std::atomic<long> g_allocations{0};
#if defined(__SANITIZE_ADDRESS__)
#define QKERN_COUNT_ALLOCATIONS 0
#else
#define QKERN_COUNT_ALLOCATIONS 1
void* operator new(size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
// Out of line, so GCC doesn't pair an inlined free() with operator new and
// warn (-Wmismatched-new-delete) about what is a matched replacement.
__attribute__((noinline)) void ReleaseCounted(void* p) noexcept { free(p); }
void operator delete(void* p) noexcept { ReleaseCounted(p); }
void operator delete[](void* p) noexcept { ReleaseCounted(p); }
void operator delete(void* p, size_t) noexcept { ReleaseCounted(p); }
void operator delete[](void* p, size_t) noexcept { ReleaseCounted(p); }
#endif

namespace qkern {
namespace {

using test::ExpectError;

SamplerConfig Greedy() {
  SamplerConfig c;
  c.temperature = 0.0f;
  return c;
}

Sampler MakeSampler(const SamplerConfig& config, size_t vocab) {
  Sampler s;
  const Status status = Sampler::Create(config, vocab, &s);
  EXPECT_TRUE(status.ok()) << status.message();
  return s;
}

int32_t SampleOne(Sampler* s, const std::vector<float>& logits) {
  int32_t token = -1;
  const Status status = s->Sample(logits.data(), &token);
  EXPECT_TRUE(status.ok()) << status.message();
  return token;
}

std::vector<float> RandomLogits(size_t n, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Logits whose T = 1 softmax is exactly proportional to `probs`.
std::vector<float> LogitsFromProbs(const std::vector<double>& probs) {
  std::vector<float> v;
  for (double p : probs) v.push_back(static_cast<float>(log(p)));
  return v;
}

// The set of tokens seen over `draws` samples (history cleared each time so
// penalties don't interfere).
std::set<int32_t> Observed(const SamplerConfig& config,
                           const std::vector<float>& logits, int draws) {
  Sampler s = MakeSampler(config, logits.size());
  std::set<int32_t> seen;
  for (int i = 0; i < draws; ++i) {
    seen.insert(SampleOne(&s, logits));
  }
  return seen;
}

// Reference filtered distribution: everything in double with a full sort,
// written straight from the definitions in sampler.h. `penalized` lists the
// distinct tokens of the repetition window.
std::vector<double> ReferenceDistribution(
    const SamplerConfig& c, std::vector<float> logits,
    const std::vector<int32_t>& penalized) {
  for (int32_t t : penalized) {
    logits[t] = ApplyRepeatPenalty(logits[t], c.repeat_penalty);
  }
  std::vector<int32_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  size_t k = c.top_k == 0 ? order.size() : std::min(c.top_k, order.size());
  order.resize(k);
  std::vector<double> p(k);
  double sum = 0;
  for (size_t j = 0; j < k; ++j) {
    p[j] = exp((static_cast<double>(logits[order[j]]) - logits[order[0]]) /
               c.temperature);
    sum += p[j];
  }
  for (double& x : p) x /= sum;
  size_t kept = k;
  double acc = 0;
  for (size_t j = 0; j < k; ++j) {
    acc += p[j];
    if (acc >= c.top_p) {
      kept = j + 1;
      break;
    }
  }
  size_t j = 1;
  while (j < kept && p[j] >= c.min_p * p[0]) ++j;
  kept = j;
  std::vector<double> out(logits.size(), 0.0);
  double mass = 0;
  for (size_t i = 0; i < kept; ++i) mass += p[i];
  for (size_t i = 0; i < kept; ++i) out[order[i]] = p[i] / mass;
  return out;
}

// Upper critical value of chi-square with `df` degrees of freedom at
// significance 1e-6, by the Wilson-Hilferty approximation: (X/df)^(1/3) is
// close to normal with mean 1 - 2/(9 df) and variance 2/(9 df), so
// X_crit = df * (1 - 2/(9 df) + z sqrt(2/(9 df)))^3 with z = 4.753 (the
// one-sided 1e-6 normal quantile). Accurate to a few percent for df >= 3,
// which is far finer than the margin a broken filter produces. The draws
// are deterministic (fixed seed), so the test never flakes; the bound says
// how unlucky a correct sampler would have to be to fail it.
double ChiSquareCritical(int df) {
  const double a = 2.0 / (9.0 * df);
  const double z = 4.753;
  return df * pow(1.0 - a + z * sqrt(a), 3.0);
}

TEST(SamplerTest, GreedyIsArgmaxLowestIdOnTies) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const std::vector<float> logits = RandomLogits(1000, seed);
    Sampler s = MakeSampler(Greedy(), logits.size());
    const int32_t want = static_cast<int32_t>(
        std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(SampleOne(&s, logits), want);
  }
  std::vector<float> tied = {1.0f, 5.0f, -2.0f, 5.0f, 5.0f};
  Sampler s = MakeSampler(Greedy(), tied.size());
  EXPECT_EQ(SampleOne(&s, tied), 1);
  // -inf is a masked token, never picked.
  std::vector<float> masked = {-INFINITY, -3.0f, -INFINITY};
  Sampler m = MakeSampler(Greedy(), masked.size());
  EXPECT_EQ(SampleOne(&m, masked), 1);
}

TEST(SamplerTest, TopKOneIsGreedyAtAnyTemperature) {
  for (float t : {0.1f, 0.8f, 1.0f, 5.0f, 100.0f}) {
    SamplerConfig c;
    c.temperature = t;
    c.top_k = 1;
    for (uint32_t seed = 0; seed < 10; ++seed) {
      std::vector<float> logits = RandomLogits(4096, seed, 0.01f);
      logits[17] = logits[4000] = 10.0f;  // tie: the lower id must win
      c.seed = seed;
      Sampler s = MakeSampler(c, logits.size());
      for (int i = 0; i < 5; ++i) EXPECT_EQ(SampleOne(&s, logits), 17) << t;
    }
  }
}

// At the top-k boundary a tie keeps the lower id, also when the later
// tied token arrives in a block the selection has to look into.
TEST(SamplerTest, TopKBoundaryTieKeepsLowerId) {
  std::vector<float> logits(8192, -50.0f);
  logits[5] = 10.0f;
  logits[6] = 8.0f;
  logits[7] = 5.0f;
  logits[4000] = 9.0f;
  logits[4001] = 8.0f;  // ties with 6; only one of them fits in k = 3
  SamplerConfig c;
  c.temperature = 50.0f;  // flat enough that every survivor shows up
  c.top_k = 3;
  c.top_p = 1.0f;
  c.min_p = 0.0f;
  EXPECT_EQ(Observed(c, logits, 2000), (std::set<int32_t>{5, 6, 4000}));
}

// The drawn frequencies match the reference distribution, for configs that
// exercise each filter and both code paths (top-k heap and full softmax).
TEST(SamplerTest, DistributionMatchesReference) {
  struct Case {
    const char* name;
    SamplerConfig config;
  };
  std::vector<Case> cases;
  auto add = [&](const char* name, float t, size_t k, float p, float min_p,
                 float pen) {
    SamplerConfig c;
    c.temperature = t;
    c.top_k = k;
    c.top_p = p;
    c.min_p = min_p;
    c.repeat_penalty = pen;
    c.repeat_last_n = 4;  // exactly the window refilled before each draw
    c.seed = cases.size() + 1;
    cases.push_back({name, c});
  };
  add("plain T=1", 1.0f, 0, 1.0f, 0.0f, 1.0f);
  add("hot", 1.7f, 0, 1.0f, 0.0f, 1.0f);
  add("top-k", 0.8f, 6, 1.0f, 0.0f, 1.0f);
  add("top-p only", 0.9f, 0, 0.8f, 0.0f, 1.0f);
  add("min-p only", 1.2f, 0, 1.0f, 0.08f, 1.0f);
  add("top-k + min-p", 1.0f, 20, 1.0f, 0.2f, 1.0f);  // min-p cuts 5 of 20
  add("defaults", 0.8f, 40, 0.95f, 0.05f, 1.0f);
  add("all + penalty", 0.7f, 10, 0.9f, 0.02f, 1.3f);
  add("full + penalty", 1.0f, 0, 0.97f, 0.01f, 1.5f);

  // 64 tokens with a spread of logits, positive and negative.
  std::vector<float> logits(64);
  for (size_t i = 0; i < logits.size(); ++i) {
    logits[i] = 2.5f - 0.11f * static_cast<float>((i * 37) % 64);
  }
  const std::vector<int32_t> window = {0, 37, 10, 37};  // 37 is logit 2.5
  std::vector<int32_t> distinct = {0, 10, 37};
  // Under qemu (which runs this file on one Arm profile, for portability,
  // ~100x slower) 50000 draws; the chi-square test stays exact at any
  // count, only its power to see small deviations drops (natively 200000).
  const int kDraws = test::UnderEmulation() ? 50000 : 200000;
  for (const Case& cs : cases) {
    const SamplerConfig& c = cs.config;
    const std::vector<double> want = ReferenceDistribution(
        c, logits,
        c.repeat_penalty != 1.0f ? distinct : std::vector<int32_t>{});
    // One sampler whose window is refilled before each draw (Accept only
    // touches the history, so the RNG stream runs on).
    Sampler s = MakeSampler(c, logits.size());
    std::vector<int> counts(logits.size(), 0);
    for (int d = 0; d < kDraws; ++d) {
      for (int32_t w : window) s.Accept(w);
      const int32_t token = SampleOne(&s, logits);
      ASSERT_GE(token, 0);
      ++counts[token];
    }
    double chi2 = 0;
    int df = -1;
    for (size_t i = 0; i < logits.size(); ++i) {
      if (want[i] == 0.0) {
        EXPECT_EQ(counts[i], 0)
            << cs.name << ": token " << i << " should have been filtered out";
        continue;
      }
      const double e = want[i] * kDraws;
      chi2 += (counts[i] - e) * (counts[i] - e) / e;
      ++df;
    }
    ASSERT_GE(df, 2) << cs.name;
    EXPECT_LT(chi2, ChiSquareCritical(df))
        << cs.name << ": chi2 " << chi2 << " with " << df << " df";
  }
}

// probs {0.4, 0.3, 0.2, 0.1}: the smallest prefix with mass >= p. Under
// top_k = 3 the nucleus is taken on the renormalized {4/9, 3/9, 2/9}.
TEST(SamplerTest, TopPKeepsSmallestPrefixReachingP) {
  // Three far-below tokens pad the vocabulary so that top_k = 4..6 is a
  // real cut (top_k >= vocab_size turns it off) without changing the set.
  const std::vector<float> logits =
      LogitsFromProbs({0.1, 0.3, 0.4, 0.2, 1e-30, 1e-30, 1e-30});
  struct Case {
    size_t top_k;
    float top_p;
    std::set<int32_t> want;
  };
  std::vector<Case> cases;
  for (size_t k : {size_t{0}, size_t{4}, size_t{6}}) {
    cases.push_back({k, 0.05f, {2}});
    cases.push_back({k, 0.39f, {2}});
    cases.push_back({k, 0.41f, {2, 1}});
    cases.push_back({k, 0.69f, {2, 1}});
    cases.push_back({k, 0.71f, {2, 1, 3}});
    cases.push_back({k, 0.89f, {2, 1, 3}});
    cases.push_back({k, 0.91f, {2, 1, 3, 0}});
    cases.push_back({k, 1.0f, {2, 1, 3, 0}});
  }
  cases.push_back({3, 0.43f, {2}});  // 4/9 = 0.444
  cases.push_back({3, 0.45f, {2, 1}});
  cases.push_back({3, 0.77f, {2, 1}});  // 7/9 = 0.778
  cases.push_back({3, 0.79f, {2, 1, 3}});
  for (const Case& cs : cases) {
    SamplerConfig c;
    c.temperature = 1.0f;
    c.top_k = cs.top_k;
    c.top_p = cs.top_p;
    c.min_p = 0.0f;
    EXPECT_EQ(Observed(c, logits, 3000), cs.want)
        << "top_p " << cs.top_p << " top_k " << cs.top_k;
  }
  // The full-vocabulary path bins tokens; a large flat-ish vocabulary puts
  // the nucleus edge inside a crowded bin. Compare with the reference set.
  const std::vector<float> big = RandomLogits(5000, 11, 1.0f);
  for (float top_p : {0.3f, 0.6f, 0.9f, 0.99f}) {
    SamplerConfig c;
    c.temperature = 1.0f;
    c.top_k = 0;
    c.top_p = top_p;
    c.min_p = 0.0f;
    const std::vector<double> ref = ReferenceDistribution(c, big, {});
    size_t want = 0;
    for (double p : ref) want += p > 0.0;
    // Every token kept is one the reference keeps, and no more than it.
    Sampler s = MakeSampler(c, big.size());
    const int draws = test::UnderEmulation() ? 4000 : 20000;  // as above
    for (int i = 0; i < draws; ++i) {
      const int32_t t = SampleOne(&s, big);
      ASSERT_GT(ref[t], 0.0) << "top_p " << top_p << " token " << t;
    }
    EXPECT_GT(want, 1u);
  }
}

// probs {0.5, 0.3, 0.1, 0.06, 0.04}: min-p keeps p >= min_p * 0.5.
TEST(SamplerTest, MinPCutoff) {
  // Padded as above so that top_k = 6 runs the top-k path.
  const std::vector<float> logits =
      LogitsFromProbs({0.06, 0.5, 0.04, 0.3, 0.1, 1e-30, 1e-30, 1e-30});
  struct Case {
    float min_p;
    std::set<int32_t> want;
  };
  const Case cases[] = {
      {0.0f, {0, 1, 2, 3, 4}},
      {0.07f, {0, 1, 2, 3, 4}},
      {0.09f, {0, 1, 3, 4}},
      {0.11f, {0, 1, 3, 4}},
      {0.13f, {1, 3, 4}},
      {0.21f, {1, 3}},
      {0.61f, {1}},
      {1.0f, {1}},
  };
  for (size_t top_k : {size_t{0}, size_t{6}}) {
    for (const Case& cs : cases) {
      SamplerConfig c;
      c.temperature = 1.0f;
      c.top_k = top_k;
      c.top_p = 1.0f;
      c.min_p = cs.min_p;
      EXPECT_EQ(Observed(c, logits, 5000), cs.want)
          << "min_p " << cs.min_p << " top_k " << top_k;
    }
  }
  // Min-p sees the tempered distribution: at T = 0.5 the ratios square, so
  // 0.3/0.5 -> 0.36 and 0.1/0.5 -> 0.04.
  SamplerConfig c;
  c.temperature = 0.5f;
  c.top_p = 1.0f;
  c.min_p = 0.05f;
  EXPECT_EQ(Observed(c, logits, 5000), (std::set<int32_t>{1, 3}));
}

TEST(SamplerTest, RepeatPenaltySemantics) {
  EXPECT_FLOAT_EQ(ApplyRepeatPenalty(3.0f, 2.0f), 1.5f);
  EXPECT_FLOAT_EQ(ApplyRepeatPenalty(-1.0f, 2.0f), -2.0f);
  EXPECT_FLOAT_EQ(ApplyRepeatPenalty(0.0f, 2.0f), 0.0f);

  SamplerConfig c = Greedy();
  c.repeat_penalty = 2.0f;
  c.repeat_last_n = 3;
  {
    // Positive logit divided: 3.0 -> 1.5 < 2.0.
    const std::vector<float> logits = {3.0f, 2.0f, -1.0f};
    Sampler s = MakeSampler(c, logits.size());
    s.Accept(0);
    EXPECT_EQ(SampleOne(&s, logits), 1);
    EXPECT_EQ(logits[0], 3.0f);  // input untouched
  }
  {
    // Negative logit multiplied: -1.0 -> -2.0 < -1.5 (dividing would give
    // -0.5 and keep token 0 on top).
    const std::vector<float> logits = {-1.0f, -1.5f, -9.0f};
    Sampler s = MakeSampler(c, logits.size());
    s.Accept(0);
    EXPECT_EQ(SampleOne(&s, logits), 1);
  }
  {
    // A token repeated in the window is penalized once: 3.0 -> 1.5 > 1.0.
    const std::vector<float> logits = {3.0f, 1.0f, 0.5f};
    Sampler s = MakeSampler(c, logits.size());
    s.Accept(0);
    s.Accept(0);
    EXPECT_EQ(SampleOne(&s, logits), 0);
  }
  {
    // Only the last repeat_last_n tokens count; sampled tokens enter too.
    const std::vector<float> logits = {3.0f, 2.0f, -1.0f, -1.0f, -1.0f};
    Sampler s = MakeSampler(c, logits.size());
    s.Accept(0);
    s.Accept(2);
    s.Accept(3);
    s.Accept(4);  // 0 has left the 3-token window
    EXPECT_EQ(SampleOne(&s, logits), 0);
    // Window is now {3, 4, 0}: 0 is penalized.
    EXPECT_EQ(SampleOne(&s, logits), 1);
    s.Reset();
    EXPECT_EQ(SampleOne(&s, logits), 0);
  }
  {
    // Out-of-range ids in the window are ignored, not dereferenced.
    const std::vector<float> logits = {3.0f, 2.0f};
    Sampler s = MakeSampler(c, logits.size());
    s.Accept(-5);
    s.Accept(1000);
    EXPECT_EQ(SampleOne(&s, logits), 0);
  }
}

TEST(SamplerTest, SeedDeterminism) {
  const std::vector<float> logits = RandomLogits(49152, 7, 2.0f);
  auto run = [&](SamplerConfig c, uint64_t seed) {
    c.seed = seed;
    Sampler s = MakeSampler(c, logits.size());
    std::vector<int32_t> seq;
    for (int i = 0; i < 64; ++i) seq.push_back(SampleOne(&s, logits));
    return seq;
  };
  SamplerConfig full;
  full.top_k = 0;
  full.top_p = 1.0f;
  full.min_p = 0.0f;
  full.temperature = 1.5f;
  for (const SamplerConfig& c : {SamplerConfig{}, full}) {
    const std::vector<int32_t> a = run(c, 42);
    EXPECT_EQ(a, run(c, 42));
    EXPECT_NE(a, run(c, 43));
    // Reset restarts the same stream.
    SamplerConfig seeded = c;
    seeded.seed = 42;
    Sampler s = MakeSampler(seeded, logits.size());
    for (int i = 0; i < 10; ++i) SampleOne(&s, logits);
    s.Reset();
    std::vector<int32_t> again;
    for (int i = 0; i < 64; ++i) again.push_back(SampleOne(&s, logits));
    EXPECT_EQ(a, again);
  }
  // The RNG is our own: its stream is fixed on every platform.
  detail::SamplerRng rng;
  rng.Seed(0);
  const uint64_t first = rng.Next();
  rng.Seed(0);
  EXPECT_EQ(rng.Next(), first);
  double sum = 0;
  for (int i = 0; i < 100000; ++i) {
    const double u = rng.NextDouble();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.005);  // 5 sigma of the mean is 0.0046
}

TEST(SamplerTest, BadConfigsNameTheField) {
  struct Case {
    SamplerConfig config;
    size_t vocab;
    const char* field;
  };
  std::vector<Case> cases;
  auto with = [](auto edit) {
    SamplerConfig c;
    edit(c);
    return c;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  cases.push_back({SamplerConfig{}, 0, "vocab_size"});
  cases.push_back({with([](SamplerConfig& c) { c.temperature = -0.1f; }), 10,
                   "temperature"});
  cases.push_back({with([&](SamplerConfig& c) { c.temperature = nan; }), 10,
                   "temperature"});
  cases.push_back({with([&](SamplerConfig& c) { c.temperature = inf; }), 10,
                   "temperature"});
  cases.push_back(
      {with([](SamplerConfig& c) { c.top_p = 0.0f; }), 10, "top_p"});
  cases.push_back(
      {with([](SamplerConfig& c) { c.top_p = 1.01f; }), 10, "top_p"});
  cases.push_back(
      {with([&](SamplerConfig& c) { c.top_p = nan; }), 10, "top_p"});
  cases.push_back(
      {with([](SamplerConfig& c) { c.min_p = -0.01f; }), 10, "min_p"});
  cases.push_back(
      {with([](SamplerConfig& c) { c.min_p = 1.5f; }), 10, "min_p"});
  cases.push_back(
      {with([&](SamplerConfig& c) { c.min_p = nan; }), 10, "min_p"});
  cases.push_back({with([](SamplerConfig& c) { c.repeat_penalty = 0.0f; }), 10,
                   "repeat_penalty"});
  cases.push_back({with([](SamplerConfig& c) { c.repeat_penalty = -1.0f; }), 10,
                   "repeat_penalty"});
  cases.push_back({with([&](SamplerConfig& c) { c.repeat_penalty = nan; }), 10,
                   "repeat_penalty"});
  cases.push_back({with([](SamplerConfig& c) { c.repeat_last_n = 1u << 30; }),
                   10, "repeat_last_n"});
  for (const Case& cs : cases) {
    Sampler s;
    ExpectError(Sampler::Create(cs.config, cs.vocab, &s),
                StatusCode::kInvalidArgument, cs.field);
  }
  // Edges that are valid.
  Sampler s;
  SamplerConfig ok;
  ok.top_p = 1.0f;
  ok.min_p = 1.0f;
  ok.top_k = 1000;  // larger than the vocabulary: off
  ok.repeat_last_n = 0;
  EXPECT_TRUE(Sampler::Create(ok, 10, &s).ok());
}

TEST(SamplerTest, NonFiniteLogitsAreErrors) {
  SamplerConfig full;
  full.top_k = 0;
  SamplerConfig full_no_cut = full;
  full_no_cut.top_p = 1.0f;
  full_no_cut.min_p = 0.0f;
  SamplerConfig penalized;
  penalized.repeat_penalty = 1.1f;
  for (const SamplerConfig& c :
       {Greedy(), SamplerConfig{}, full, full_no_cut, penalized}) {
    for (float bad : {NAN, INFINITY}) {
      std::vector<float> logits = RandomLogits(100, 1);
      logits[37] = bad;
      Sampler s = MakeSampler(c, logits.size());
      int32_t token = -1;
      ExpectError(
          s.Sample(logits.data(), &token), StatusCode::kInvalidArgument,
          std::string("logits[37] is ") + (bad != bad ? "NaN" : "+inf"));
      EXPECT_EQ(token, -1);
    }
    {
      Sampler s = MakeSampler(c, 4);
      int32_t token;
      ExpectError(s.Sample(nullptr, &token), StatusCode::kInvalidArgument,
                  "logits is null");
    }
    std::vector<float> masked(100, -INFINITY);
    Sampler s = MakeSampler(c, masked.size());
    int32_t token = -1;
    ExpectError(s.Sample(masked.data(), &token), StatusCode::kInvalidArgument,
                "-inf");
  }
}

TEST(SamplerTest, NoAllocationAfterCreate) {
  if (!QKERN_COUNT_ALLOCATIONS)
    GTEST_SKIP() << "allocation counting is off under ASan";
  const std::vector<float> logits = RandomLogits(49152, 5, 1.0f);
  SamplerConfig no_top_k;
  no_top_k.top_k = 0;
  SamplerConfig no_cut = no_top_k;
  no_cut.top_p = 1.0f;
  no_cut.min_p = 0.0f;
  SamplerConfig penalty;
  penalty.repeat_penalty = 1.2f;
  SamplerConfig flat_top_p = no_top_k;  // many candidates in the cut bins
  flat_top_p.min_p = 0.0f;
  flat_top_p.top_p = 0.999f;
  flat_top_p.temperature = 4.0f;
  for (const SamplerConfig& c :
       {SamplerConfig{}, Greedy(), no_top_k, no_cut, penalty, flat_top_p}) {
    Sampler s = MakeSampler(c, logits.size());
    for (int32_t t = 0; t < 100; ++t) s.Accept(t);
    int32_t token;
    const long before = g_allocations.load();
    for (int i = 0; i < 20; ++i) {
      if (!s.Sample(logits.data(), &token).ok()) break;
    }
    s.Reset();
    const long after = g_allocations.load();
    EXPECT_EQ(after - before, 0) << "top_k " << c.top_k << " top_p " << c.top_p;
  }
}

}  // namespace
}  // namespace qkern
