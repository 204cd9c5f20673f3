// The hyper-parameters of a Llama-family decoder, read from GGUF metadata.
//
// Supported architectures: `llama` (Llama 2/3.x, SmolLM, TinyLlama, Mistral
// without sliding window) and `qwen2` (q/k/v biases, NeoX RoPE). Keys are the
// GGUF convention "<arch>.<name>"; every value is checked for consistency
// (heads divide the width, GQA ratio integral, RoPE dims even...) so the
// loader and the forward pass can trust it.
#ifndef QKERN_MODEL_MODEL_CONFIG_H_
#define QKERN_MODEL_MODEL_CONFIG_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <string>
#include <string_view>

#include "qkern/base/status.h"
#include "qkern/kernels/rope.h"
#include "qkern/model/gguf_reader.h"

namespace qkern {

enum class ModelArch : uint32_t { kLlama = 0, kQwen2 };

inline const char* ModelArchName(ModelArch arch) {
  return arch == ModelArch::kQwen2 ? "qwen2" : "llama";
}

struct ModelConfig {
  ModelArch arch = ModelArch::kLlama;
  std::string name;          // general.name, for messages
  size_t num_layers = 0;
  size_t dim = 0;            // embedding width
  size_t ffn_dim = 0;
  size_t num_q_heads = 0;
  size_t num_kv_heads = 0;
  size_t head_dim = 0;
  size_t vocab_size = 0;
  size_t context_length = 0;  // what the model was trained for
  float rms_eps = 1e-5f;
  bool qkv_bias = false;      // qwen2
  RopeConfig rope;

  size_t q_dim() const { return num_q_heads * head_dim; }
  size_t kv_dim() const { return num_kv_heads * head_dim; }
};

namespace detail {

inline Status ReadPositive(const GgufFile& file, const std::string& key,
                           size_t limit, size_t* out) {
  const GgufMetadataEntry* entry = file.FindMetadata(key);
  if (entry == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s: missing metadata key '%s'", file.source().c_str(),
                      key.c_str());
  }
  uint64_t value = 0;
  switch (entry->type) {
    case GgufValueType::kUint32: {
      uint32_t v = 0;
      QKERN_RETURN_IF_ERROR(file.GetU32(key, &v));
      value = v;
      break;
    }
    case GgufValueType::kInt32: {
      int32_t v = 0;
      QKERN_RETURN_IF_ERROR(file.GetI32(key, &v));
      value = v < 0 ? 0 : static_cast<uint64_t>(v);
      break;
    }
    case GgufValueType::kUint64:
      QKERN_RETURN_IF_ERROR(file.GetU64(key, &value));
      break;
    default:
      return MakeStatus(StatusCode::kDataLoss,
                        "%s: metadata '%s' has type %s, expected an integer",
                        file.source().c_str(), key.c_str(),
                        ValueTypeName(entry->type));
  }
  if (value == 0 || value > limit) {
    return MakeStatus(StatusCode::kDataLoss,
                      "%s: metadata '%s' = %llu is outside [1, %zu]",
                      file.source().c_str(), key.c_str(),
                      static_cast<unsigned long long>(value), limit);
  }
  *out = static_cast<size_t>(value);
  return Status::Ok();
}

inline Status ReadOptionalPositive(const GgufFile& file, const std::string& key,
                                   size_t limit, size_t fallback,
                                   size_t* out) {
  if (file.FindMetadata(key) == nullptr) {
    *out = fallback;
    return Status::Ok();
  }
  return ReadPositive(file, key, limit, out);
}

inline Status ReadOptionalFloat(const GgufFile& file, const std::string& key,
                                float fallback, float* out) {
  QKERN_RETURN_IF_ERROR(file.GetF32Or(key, fallback, out));
  if (!isfinite(*out)) {
    return MakeStatus(StatusCode::kDataLoss, "%s: metadata '%s' is %g",
                      file.source().c_str(), key.c_str(),
                      static_cast<double>(*out));
  }
  return Status::Ok();
}

}  // namespace detail

// Reads and validates the config. The RoPE frequency-factor tensor
// (`rope_freqs.weight`, Llama 3.1+) is read by the weight loader, which fills
// config->rope.scaling from it.
inline Status ReadModelConfig(const GgufFile& file, ModelConfig* out) {
  std::string_view arch;
  QKERN_RETURN_IF_ERROR(file.GetString("general.architecture", &arch));
  ModelConfig c;
  if (arch == "llama") {
    c.arch = ModelArch::kLlama;
  } else if (arch == "qwen2") {
    c.arch = ModelArch::kQwen2;
    c.qkv_bias = true;
  } else {
    return MakeStatus(StatusCode::kUnsupported,
                      "%s: architecture '%s' is not supported (qkern runs "
                      "'llama' and 'qwen2')",
                      file.source().c_str(), std::string(arch).c_str());
  }
  std::string_view name;
  QKERN_RETURN_IF_ERROR(file.GetStringOr("general.name", "", &name));
  c.name = std::string(name);
  const std::string a(arch);
  constexpr size_t kMaxWidth = size_t{1} << 17;
  QKERN_RETURN_IF_ERROR(
      detail::ReadPositive(file, a + ".block_count", 4096, &c.num_layers));
  QKERN_RETURN_IF_ERROR(
      detail::ReadPositive(file, a + ".embedding_length", kMaxWidth, &c.dim));
  QKERN_RETURN_IF_ERROR(detail::ReadPositive(
      file, a + ".feed_forward_length", 4 * kMaxWidth, &c.ffn_dim));
  QKERN_RETURN_IF_ERROR(detail::ReadPositive(
      file, a + ".attention.head_count", 4096, &c.num_q_heads));
  QKERN_RETURN_IF_ERROR(detail::ReadOptionalPositive(
      file, a + ".attention.head_count_kv", 4096, c.num_q_heads,
      &c.num_kv_heads));
  if (c.dim % c.num_q_heads != 0 && file.FindMetadata(a + ".attention.key_length") == nullptr) {
    return MakeStatus(StatusCode::kDataLoss,
                      "%s: embedding_length %zu is not a multiple of "
                      "head_count %zu",
                      file.source().c_str(), c.dim, c.num_q_heads);
  }
  QKERN_RETURN_IF_ERROR(detail::ReadOptionalPositive(
      file, a + ".attention.key_length", 1024, c.dim / c.num_q_heads,
      &c.head_dim));
  size_t value_length = 0;
  QKERN_RETURN_IF_ERROR(detail::ReadOptionalPositive(
      file, a + ".attention.value_length", 1024, c.head_dim, &value_length));
  if (value_length != c.head_dim) {
    return MakeStatus(StatusCode::kUnsupported,
                      "%s: key_length %zu != value_length %zu is not supported",
                      file.source().c_str(), c.head_dim, value_length);
  }
  if (c.num_q_heads % c.num_kv_heads != 0) {
    return MakeStatus(StatusCode::kDataLoss,
                      "%s: head_count %zu is not a multiple of head_count_kv "
                      "%zu",
                      file.source().c_str(), c.num_q_heads, c.num_kv_heads);
  }
  if (c.head_dim % 2 != 0) {
    return MakeStatus(StatusCode::kDataLoss, "%s: head dimension %zu is odd",
                      file.source().c_str(), c.head_dim);
  }
  QKERN_RETURN_IF_ERROR(detail::ReadOptionalPositive(
      file, a + ".context_length", size_t{1} << 24, 4096, &c.context_length));
  QKERN_RETURN_IF_ERROR(detail::ReadOptionalFloat(
      file, a + ".attention.layer_norm_rms_epsilon", 1e-5f, &c.rms_eps));
  if (!(c.rms_eps > 0.0f)) {
    return MakeStatus(StatusCode::kDataLoss,
                      "%s: layer_norm_rms_epsilon must be > 0",
                      file.source().c_str());
  }

  // The vocabulary size comes from the tokenizer when the key is absent.
  const std::string vocab_key = a + ".vocab_size";
  if (file.FindMetadata(vocab_key) != nullptr) {
    QKERN_RETURN_IF_ERROR(
        detail::ReadPositive(file, vocab_key, size_t{1} << 22, &c.vocab_size));
  } else {
    GgufArrayView tokens;
    QKERN_RETURN_IF_ERROR(file.GetArray("tokenizer.ggml.tokens", &tokens));
    c.vocab_size = tokens.size();
  }

  // RoPE. Llama GGUF files store q/k with rotation pairs interleaved (the
  // converter permutes the HF weights), so Llama uses adjacent pairs; Qwen2
  // keeps HF's rotate-half order.
  c.rope.head_dim = c.head_dim;
  QKERN_RETURN_IF_ERROR(detail::ReadOptionalPositive(
      file, a + ".rope.dimension_count", c.head_dim, c.head_dim,
      &c.rope.rotary_dim));
  float theta = 10000.0f;
  QKERN_RETURN_IF_ERROR(
      detail::ReadOptionalFloat(file, a + ".rope.freq_base", 10000.0f, &theta));
  c.rope.theta_base = theta;
  c.rope.layout =
      c.arch == ModelArch::kQwen2 ? RopeLayout::kNeox : RopeLayout::kGptJ;
  std::string_view scaling = "none";
  QKERN_RETURN_IF_ERROR(
      file.GetStringOr(a + ".rope.scaling.type", "none", &scaling));
  float factor = 1.0f;
  QKERN_RETURN_IF_ERROR(
      detail::ReadOptionalFloat(file, a + ".rope.scaling.factor", 1.0f, &factor));
  size_t original_context = c.context_length;
  QKERN_RETURN_IF_ERROR(detail::ReadOptionalPositive(
      file, a + ".rope.scaling.original_context_length", size_t{1} << 24,
      c.context_length, &original_context));
  if (scaling == "linear") {
    c.rope.scaling = RopeScaling::Linear(factor);
  } else if (scaling == "yarn") {
    c.rope.scaling = RopeScaling::Yarn(factor, static_cast<double>(original_context));
  } else if (scaling != "none" && !scaling.empty()) {
    return MakeStatus(StatusCode::kUnsupported,
                      "%s: rope.scaling.type '%s' is not supported (none, "
                      "linear, yarn; Llama 3 scaling comes from the "
                      "rope_freqs tensor)",
                      file.source().c_str(), std::string(scaling).c_str());
  }
  QKERN_RETURN_IF_ERROR(ValidateRopeConfig(c.rope));
  *out = std::move(c);
  return Status::Ok();
}

}  // namespace qkern

#endif  // QKERN_MODEL_MODEL_CONFIG_H_
