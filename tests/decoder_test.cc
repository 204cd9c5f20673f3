// Tests for the reference decoder (qkern/model/): weight loading and
// conversion, the forward pass, sequences in the paged cache, bad input.
//
// The models are tests/data/tiny_llama.gguf (tools/make_gguf.py): 3 layers,
// width 32, 4 query / 2 KV heads, FFN 256, vocab 64, with every weight type
// the loader reads (Q4_0, Q4_1, Q8_0 in place; F16, F32, BF16, Q5_0, Q5_1,
// Q4_K, Q5_K, Q6_K converted), so each conversion and each stacked /
// unstacked projection path runs; and tiny_qwen2.gguf (biases, NeoX RoPE,
// MQA, tied output head).
//
// 1. Against a double-precision forward pass written here from the formulas,
//    on the weights the kernels multiply (the native matrices, dequantized),
//    on every target. The reference applies the kernels' one deliberate
//    approximation, the int8 quantization of each matmul's input (per
//    32-block, with the bit-exact reference quantizer), so what is left is
//    f32 vs double rounding: relative errors near 1e-6. The bound, 1e-3
//    relative RMS error of the logits, leaves room for rare code flips at a
//    rounding tie, while any real defect (a wrong weight row, a missed cache
//    position, a wrong rotation) gives errors of order 1. (Without the
//    emulation, this random network amplifies the 0.23% quantization noise
//    chaotically, to 10-18% at some positions: that comparison measures the
//    weights, not the code. Accuracy against float on a real model is the
//    job of model_test.)
// 2. Self-consistency, which must hold to f32 rounding: prefill of n tokens
//    == n single-token steps; chunked prefill == one batch; a forked
//    sequence == an independent one; Truncate + re-eval == the first eval.
// 3. Bad input: context full, token out of range, unknown sequence, KV pool
//    exhausted (the sequence is left as it was), corrupt model files.
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "qkern/model/decoder.h"
#include "qkern/model/tensor_convert.h"
#include "qkern/kernels/matmul_ref.h"
#include "qkern/quant/quantize_ref.h"
#include "status_matchers.h"
#include "test_util.h"

#ifndef QKERN_TEST_DATA_DIR
#error "QKERN_TEST_DATA_DIR must name the tests/data directory"
#endif

namespace qkern {
namespace {

using test::ExpectError;


std::string TinyModelPath(const char* name = "tiny_llama.gguf") {
  return std::string(QKERN_TEST_DATA_DIR) + "/" + name;
}

// --- The reference forward pass ---------------------------------------------

using Matrix = std::vector<std::vector<double>>;  // rows x cols

Matrix LoadMatrix(const GgufFile& file, const std::string& name) {
  GgufTensorInfo t;
  EXPECT_TRUE(file.FindTensor(name, &t).ok()) << name;
  NativeMatrix native;
  EXPECT_TRUE(ToNativeMatrix(t, &native).ok()) << name;
  Matrix m(native.view.rows, std::vector<double>(native.view.cols));
  std::vector<float> row(native.view.cols);
  for (size_t r = 0; r < native.view.rows; ++r) {
    ref::DequantizeRow(native.view, r, row.data());
    for (size_t j = 0; j < row.size(); ++j) m[r][j] = row[j];
  }
  return m;
}

std::vector<double> LoadVector(const GgufFile& file, const std::string& name) {
  GgufTensorInfo t;
  EXPECT_TRUE(file.FindTensor(name, &t).ok()) << name;
  std::vector<float> v(t.ne[0]);
  detail::DequantizeTensorRow(t, 0, v.data());
  return std::vector<double>(v.begin(), v.end());
}

// y = W x, with x first rounded to f32 and quantized as the kernels do.
std::vector<double> MatVec(const Matrix& w, const std::vector<double>& x_in) {
  const std::vector<float> xf(x_in.begin(), x_in.end());
  std::vector<int8_t> codes(xf.size());
  std::vector<float> scale(xf.size() / kQuantBlock), sums(scale.size());
  ref::QuantizeActivationsRow(xf.data(), xf.size(), codes.data(), scale.data(),
                              sums.data());
  std::vector<double> x(xf.size());
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = static_cast<double>(codes[i]) * scale[i / kQuantBlock];
  }
  std::vector<double> y(w.size(), 0.0);
  for (size_t r = 0; r < w.size(); ++r) {
    for (size_t j = 0; j < x.size(); ++j) y[r] += w[r][j] * x[j];
  }
  return y;
}

std::vector<double> RmsNormRef(const std::vector<double>& x,
                               const std::vector<double>& w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double inv = 1.0 / sqrt(ss / x.size() + eps);
  std::vector<double> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
  return y;
}

// Rotation of one head at `pos`: pairs (2i, 2i + 1) for Llama GGUF files,
// (i, i + dim / 2) for Qwen2.
void RopeRef(double* head, size_t dim, double theta, size_t pos, bool neox) {
  for (size_t i = 0; i < dim / 2; ++i) {
    const double freq = pow(theta, -2.0 * i / dim);
    const double a = pos * freq, c = cos(a), s = sin(a);
    const size_t i0 = neox ? i : 2 * i, i1 = neox ? i + dim / 2 : 2 * i + 1;
    const double x0 = head[i0], x1 = head[i1];
    head[i0] = x0 * c - x1 * s;
    head[i1] = x0 * s + x1 * c;
  }
}

void AddBias(std::vector<double>* y, const std::vector<double>& b) {
  for (size_t i = 0; i < y->size(); ++i) (*y)[i] += b[i];
}

// Logits of every position of `tokens`, from position 0.
std::vector<std::vector<double>> ReferenceLogits(const std::string& path,
                                                 const std::vector<int32_t>& tokens) {
  GgufFile file;
  EXPECT_TRUE(GgufFile::Open(path, &file).ok());
  ModelConfig c;
  EXPECT_TRUE(ReadModelConfig(file, &c).ok());
  const Matrix embd = LoadMatrix(file, "token_embd.weight");
  struct Layer {
    std::vector<double> attn_norm, ffn_norm, q_bias, k_bias, v_bias;
    Matrix q, k, v, o, gate, up, down;
  };
  std::vector<Layer> layers(c.num_layers);
  for (size_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    Layer& l = layers[i];
    l.attn_norm = LoadVector(file, p + "attn_norm.weight");
    l.ffn_norm = LoadVector(file, p + "ffn_norm.weight");
    if (c.qkv_bias) {
      l.q_bias = LoadVector(file, p + "attn_q.bias");
      l.k_bias = LoadVector(file, p + "attn_k.bias");
      l.v_bias = LoadVector(file, p + "attn_v.bias");
    }
    l.q = LoadMatrix(file, p + "attn_q.weight");
    l.k = LoadMatrix(file, p + "attn_k.weight");
    l.v = LoadMatrix(file, p + "attn_v.weight");
    l.o = LoadMatrix(file, p + "attn_output.weight");
    l.gate = LoadMatrix(file, p + "ffn_gate.weight");
    l.up = LoadMatrix(file, p + "ffn_up.weight");
    l.down = LoadMatrix(file, p + "ffn_down.weight");
  }
  const std::vector<double> out_norm = LoadVector(file, "output_norm.weight");
  GgufTensorInfo head_info;
  const bool tied = !file.FindTensor("output.weight", &head_info).ok();
  const Matrix out = LoadMatrix(file, tied ? "token_embd.weight" : "output.weight");
  // The embedding row is read from the file's own type (F16), not converted.
  GgufTensorInfo embd_info;
  EXPECT_TRUE(file.FindTensor("token_embd.weight", &embd_info).ok());

  const size_t hd = c.head_dim, group = c.num_q_heads / c.num_kv_heads;
  std::vector<std::vector<std::vector<double>>> keys(c.num_layers),
      values(c.num_layers);
  std::vector<std::vector<double>> logits;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    std::vector<float> row(c.dim);
    detail::DequantizeTensorRow(embd_info, tokens[pos], row.data());
    std::vector<double> x(row.begin(), row.end());
    for (size_t li = 0; li < c.num_layers; ++li) {
      const Layer& l = layers[li];
      std::vector<double> h = RmsNormRef(x, l.attn_norm, c.rms_eps);
      std::vector<double> q = MatVec(l.q, h), k = MatVec(l.k, h),
                          v = MatVec(l.v, h);
      if (c.qkv_bias) {
        AddBias(&q, l.q_bias);
        AddBias(&k, l.k_bias);
        AddBias(&v, l.v_bias);
      }
      const bool neox = c.arch == ModelArch::kQwen2;
      for (size_t head = 0; head < c.num_q_heads; ++head) {
        RopeRef(&q[head * hd], hd, c.rope.theta_base, pos, neox);
      }
      for (size_t head = 0; head < c.num_kv_heads; ++head) {
        RopeRef(&k[head * hd], hd, c.rope.theta_base, pos, neox);
      }
      keys[li].push_back(k);
      values[li].push_back(v);
      std::vector<double> attn(c.q_dim(), 0.0);
      for (size_t head = 0; head < c.num_q_heads; ++head) {
        const size_t kvh = head / group;
        std::vector<double> score(pos + 1);
        double mx = -1e300;
        for (size_t p = 0; p <= pos; ++p) {
          double d = 0;
          for (size_t j = 0; j < hd; ++j) {
            d += q[head * hd + j] * keys[li][p][kvh * hd + j];
          }
          score[p] = d / sqrt(static_cast<double>(hd));
          mx = std::max(mx, score[p]);
        }
        double sum = 0;
        for (double& s : score) sum += (s = exp(s - mx));
        for (size_t p = 0; p <= pos; ++p) {
          for (size_t j = 0; j < hd; ++j) {
            attn[head * hd + j] += score[p] / sum * values[li][p][kvh * hd + j];
          }
        }
      }
      const std::vector<double> o = MatVec(l.o, attn);
      for (size_t i = 0; i < x.size(); ++i) x[i] += o[i];
      h = RmsNormRef(x, l.ffn_norm, c.rms_eps);
      const std::vector<double> g = MatVec(l.gate, h), u = MatVec(l.up, h);
      std::vector<double> act(g.size());
      for (size_t i = 0; i < g.size(); ++i) {
        act[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
      }
      const std::vector<double> d = MatVec(l.down, act);
      for (size_t i = 0; i < x.size(); ++i) x[i] += d[i];
    }
    logits.push_back(MatVec(out, RmsNormRef(x, out_norm, c.rms_eps)));
  }
  return logits;
}

double RelativeRmsError(const float* got, const std::vector<double>& want) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return sqrt(err / norm);
}

// --- Fixture ------------------------------------------------------------------

class DecoderTest : public test::PerTarget {
 protected:
  void LoadTiny(DecoderOptions options = DecoderOptions(),
                const char* name = "tiny_llama.gguf") {
    QKERN_ASSERT_OK(Model::Load(TinyModelPath(name), &model_));
    options.num_threads = options.num_threads == 0 ? 2 : options.num_threads;
    QKERN_ASSERT_OK(Decoder::Create(model_, options, &decoder_));
  }
  std::vector<float> EvalAll(KvSeqId seq, const std::vector<int32_t>& tokens) {
    std::vector<float> logits(tokens.size() * decoder_.vocab_size());
    const Status s = decoder_.Eval(seq, tokens.data(), tokens.size(),
                                   logits.data(), /*all_logits=*/true);
    EXPECT_TRUE(s.ok()) << s.message();
    return logits;
  }

  Model model_;
  Decoder decoder_;
};

std::vector<int32_t> Tokens(size_t n, uint32_t seed, size_t vocab = 64) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) {
    t[i] = static_cast<int32_t>((i * 7919 + seed * 104729 + i * i) % vocab);
  }
  return t;
}

TEST_P(DecoderTest, LoadsEveryWeightType) {
  LoadTiny();
  const ModelConfig& c = model_.config();
  EXPECT_EQ(c.num_layers, 3u);
  EXPECT_EQ(c.dim, 32u);
  EXPECT_EQ(c.head_dim, 8u);
  EXPECT_EQ(c.num_kv_heads, 2u);
  EXPECT_EQ(c.vocab_size, 64u);
  EXPECT_FALSE(model_.weights().tied_output);
  // Layer 0 has q Q4_0, k Q4_1, v Q8_0: three formats, three parts. Layer 2
  // has q Q8_0, k BF16 -> Q8_0, v Q4_1: q|k stacked, v alone.
  EXPECT_EQ(model_.weights().layers[0].qkv.parts.size(), 3u);
  EXPECT_EQ(model_.weights().layers[2].qkv.parts.size(), 2u);
  EXPECT_EQ(model_.weights().layers[2].qkv.out_features, 64u);
  // One notice per conversion kind, naming it.
  std::string notes;
  for (const std::string& l : model_.notes().lines) notes += l + "\n";
  for (const char* kind : {"Q4_K -> Q4_1", "Q6_K -> Q8_0", "BF16 -> Q8_0",
                           "Q5_0 -> Q8_0", "Q5_K -> Q8_0"}) {
    EXPECT_NE(notes.find(kind), std::string::npos) << kind << " in\n" << notes;
  }
}

void ExpectMatchesReference(Decoder* decoder, const char* name) {
  const std::vector<int32_t> tokens = Tokens(23, 1);
  const auto want = ReferenceLogits(TinyModelPath(name), tokens);
  ASSERT_TRUE(decoder->AddSequence(0).ok());
  std::vector<float> got(tokens.size() * decoder->vocab_size());
  const Status s = decoder->Eval(0, tokens.data(), tokens.size(), got.data(),
                                 /*all_logits=*/true);
  ASSERT_TRUE(s.ok()) << s.message();
  const size_t V = decoder->vocab_size();
  const double bound = 1e-3;
  double worst = 0;
  for (size_t pos = 0; pos < tokens.size(); ++pos) {
    const double err = RelativeRmsError(&got[pos * V], want[pos]);
    worst = std::max(worst, err);
    EXPECT_LE(err, bound) << name << " position " << pos;
  }
  printf("%s: worst relative RMS logit error %.2e (bound %.0e)\n", name, worst,
         bound);
}

TEST_P(DecoderTest, MatchesDoublePrecisionReference) {
  DecoderOptions options;
  options.kv_format = KvFormat::kF32;  // no cache rounding: see the header
  options.max_batch = 5;               // several prefill chunks
  LoadTiny(options);
  ExpectMatchesReference(&decoder_, "tiny_llama.gguf");
}

// Qwen2: q/k/v biases, rotate-half RoPE, one KV head for four query heads
// (MQA), and the output head tied to the (Q8_0) embedding.
TEST_P(DecoderTest, Qwen2MatchesDoublePrecisionReference) {
  DecoderOptions options;
  options.kv_format = KvFormat::kF32;
  options.max_batch = 7;
  LoadTiny(options, "tiny_qwen2.gguf");
  EXPECT_TRUE(model_.weights().tied_output);
  EXPECT_EQ(model_.config().arch, ModelArch::kQwen2);
  ExpectMatchesReference(&decoder_, "tiny_qwen2.gguf");
}

TEST_P(DecoderTest, PrefillEqualsStepByStepAndChunks) {
  for (KvFormat kv : {KvFormat::kF16, KvFormat::kInt8}) {
    DecoderOptions options;
    options.kv_format = kv;
    options.max_batch = 64;
    LoadTiny(options);
    const std::vector<int32_t> tokens = Tokens(40, 2);
    QKERN_ASSERT_OK(decoder_.AddSequence(0));
    const std::vector<float> batch = EvalAll(0, tokens);
    QKERN_ASSERT_OK(decoder_.AddSequence(1));
    std::vector<float> steps;
    for (int32_t t : tokens) {
      const std::vector<float> l = EvalAll(1, {t});
      steps.insert(steps.end(), l.begin(), l.end());
    }
    // Same int8 products, same cache contents; only f32 summation order
    // differs (GEMM vs GEMV tiles, prefill vs split-KV attention).
    ASSERT_EQ(batch.size(), steps.size());
    double scale = 0;
    for (float v : batch) scale = std::max(scale, static_cast<double>(fabsf(v)));
    for (size_t i = 0; i < batch.size(); ++i) {
      ASSERT_NEAR(batch[i], steps[i], 1e-3 * scale)
          << "kv " << GetKvFormatInfo(kv).name << " logit " << i;
    }
  }
}

TEST_P(DecoderTest, ForkTruncateAndInterleavedSequences) {
  LoadTiny();
  const std::vector<int32_t> prefix = Tokens(17, 3), tail = Tokens(6, 4);
  std::vector<int32_t> whole = prefix;
  whole.insert(whole.end(), tail.begin(), tail.end());
  QKERN_ASSERT_OK(decoder_.AddSequence(10));
  const std::vector<float> want = EvalAll(10, whole);
  const size_t V = decoder_.vocab_size();
  const float* want_tail = &want[prefix.size() * V];
  auto expect_tail = [&](const std::vector<float>& got, const char* what) {
    for (size_t i = 0; i < tail.size() * V; ++i) {
      ASSERT_NEAR(got[i], want_tail[i], 1e-3f * (1.0f + fabsf(want_tail[i])))
          << what << " logit " << i;
    }
  };
  // Fork after the prefix, interleaving steps of the two sequences.
  QKERN_ASSERT_OK(decoder_.AddSequence(20));
  EvalAll(20, prefix);
  QKERN_ASSERT_OK(decoder_.Fork(20, 21));
  std::vector<float> a, b;
  for (int32_t t : tail) {
    std::vector<float> la = EvalAll(20, {t});
    std::vector<float> lb = EvalAll(21, {t});
    a.insert(a.end(), la.begin(), la.end());
    b.insert(b.end(), lb.begin(), lb.end());
  }
  expect_tail(a, "original after fork");
  expect_tail(b, "fork");
  // Roll back and regenerate.
  QKERN_ASSERT_OK(decoder_.Truncate(21, prefix.size()));
  expect_tail(EvalAll(21, tail), "after truncate");
}

TEST_P(DecoderTest, RejectsBadCallsAndRollsBack) {
  DecoderOptions options;
  options.context_length = 20;
  LoadTiny(options);
  QKERN_ASSERT_OK(decoder_.AddSequence(0));
  const std::vector<int32_t> tokens = Tokens(12, 5);
  EvalAll(0, tokens);
  std::vector<float> logits(decoder_.vocab_size());
  ExpectError(decoder_.Eval(0, tokens.data(), 9, logits.data()),
              StatusCode::kOutOfRange, "context full");
  const int32_t bad[] = {3, 64};
  ExpectError(decoder_.Eval(0, bad, 2, logits.data()), StatusCode::kOutOfRange,
              "outside the vocabulary");
  ExpectError(decoder_.Eval(7, bad, 1, logits.data()),
              StatusCode::kInvalidArgument, "7");
  size_t length = 0;
  QKERN_ASSERT_OK(decoder_.Length(0, &length));
  EXPECT_EQ(length, 12u);
  EXPECT_TRUE(decoder_.Eval(0, tokens.data(), 8, logits.data()).ok());
}

TEST_P(DecoderTest, FullKvPoolLeavesSequencesIntact) {
  DecoderOptions options;
  options.kv_block_tokens = 16;
  options.context_length = 128;
  LoadTiny(options);
  // Budget of one sequence of 128 tokens = 8 blocks; two sequences of 64
  // fill it.
  QKERN_ASSERT_OK(decoder_.AddSequence(0));
  QKERN_ASSERT_OK(decoder_.AddSequence(1));
  EvalAll(0, Tokens(64, 6));
  EvalAll(1, Tokens(64, 7));
  std::vector<float> logits(decoder_.vocab_size());
  const int32_t one = 5;
  ExpectError(decoder_.Eval(0, &one, 1, logits.data()),
              StatusCode::kResourceExhausted, "free");
  size_t length = 0;
  QKERN_ASSERT_OK(decoder_.Length(0, &length));
  EXPECT_EQ(length, 64u);
  QKERN_ASSERT_OK(decoder_.FreeSequence(1));
  EXPECT_TRUE(decoder_.Eval(0, &one, 1, logits.data()).ok());
}

QKERN_INSTANTIATE_PER_TARGET(DecoderTest);

// --- Corrupt model files --------------------------------------------------

std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Writes `bytes` with the first occurrence of `from` replaced by `to` (same
// length) to a temporary file and loads it.
Status LoadPatched(const std::string& from, const std::string& to) {
  std::vector<uint8_t> bytes = ReadFileBytes(TinyModelPath());
  const std::string s(bytes.begin(), bytes.end());
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  EXPECT_EQ(from.size(), to.size());
  if (at != std::string::npos) memcpy(&bytes[at], to.data(), to.size());
  char path[] = "/tmp/qkern_decoder_test_XXXXXX";
  const int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(write(fd, bytes.data(), bytes.size()),
            static_cast<ssize_t>(bytes.size()));
  close(fd);
  Model model;
  const Status status = Model::Load(path, &model);
  unlink(path);
  return status;
}

TEST(DecoderLoadTest, CorruptFilesGiveClearErrors) {
  ExpectError(LoadPatched("blk.1.ffn_up.weight", "blk.1.ffn_uq.weight"),
              StatusCode::kInvalidArgument, "blk.1.ffn_up.weight");
  ExpectError(LoadPatched(std::string("\x05\x00\x00\x00\x00\x00\x00\x00llama", 13),
                          std::string("\x05\x00\x00\x00\x00\x00\x00\x00llamb", 13)),
              StatusCode::kUnsupported, "llamb");
  ExpectError(LoadPatched("output_norm.weight", "outpux_norm.weight"),
              StatusCode::kInvalidArgument, "output_norm.weight");
  Model model;
  ExpectError(Model::Load("/nonexistent/model.gguf", &model),
              StatusCode::kIoError, "/nonexistent/model.gguf");
}

}  // namespace
}  // namespace qkern
