// The weights of a Llama-family model, loaded from a GGUF file and packed for
// the running SIMD target.
//
// Projections that read the same input are packed as one stacked matrix when
// their formats agree (q|k|v and gate|up), so decode runs one GEMV (one
// thread-pool region) where it would run three. Each packed tensor's pages of
// the mapped file are dropped right after packing, so the weights are resident
// once, not twice. The token embedding stays in the file (rows are gathered
// on demand) unless its type needs a decoder the gather lacks.
#ifndef QKERN_MODEL_MODEL_WEIGHTS_H_
#define QKERN_MODEL_MODEL_WEIGHTS_H_

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <string>
#include <vector>

#include "qkern/base/f16.h"
#include "qkern/base/status.h"
#include "qkern/kernels/matmul.h"
#include "qkern/kernels/ops.h"
#include "qkern/model/gguf_reader.h"
#include "qkern/model/model_config.h"
#include "qkern/model/tensor_convert.h"
#include "qkern/threading/parallel.h"

namespace qkern {

// Some output columns of a projection: `weights` fills columns
// [column, column + weights.rows) of the output row.
struct ProjectionPart {
  PackedWeights weights;
  size_t column = 0;
  std::vector<float> bias;  // weights.rows floats, or empty
};

// One logical projection (e.g. q|k|v) as one stacked matrix or several.
struct Projection {
  std::vector<ProjectionPart> parts;
  size_t out_features = 0;

  size_t WeightBytes() const {
    size_t bytes = 0;
    for (const ProjectionPart& p : parts) bytes += p.weights.WeightBytes();
    return bytes;
  }
};

struct LayerWeights {
  std::vector<float> attn_norm;  // dim
  std::vector<float> ffn_norm;   // dim
  Projection qkv;                // -> [q (q_dim) | k (kv_dim) | v (kv_dim)]
  Projection attn_output;        // q_dim -> dim
  Projection gate_up;            // -> [gate (ffn) | up (ffn)]
  Projection down;               // ffn -> dim
};

// The token embedding table, gathered row by row.
struct EmbeddingTable {
  const void* data = nullptr;  // rows of the GGUF tensor, in the mapping
  GgmlType type = GgmlType::kF32;
  size_t rows = 0;
  size_t cols = 0;
  GgufTensorInfo tensor;  // for rows of types EmbeddingRow does not decode
};

// Human-readable notes about the load (conversions), for the caller to show.
struct LoadNotes {
  std::vector<std::string> lines;
};

struct ModelWeights {
  EmbeddingTable embedding;
  std::vector<LayerWeights> layers;
  std::vector<float> output_norm;
  Projection output;  // dim -> vocab (the embedding when tied)
  bool tied_output = false;

  // Bytes the forward pass streams per decoded token (every matrix once).
  size_t DecodeWeightBytes() const {
    size_t bytes = output.WeightBytes();
    for (const LayerWeights& l : layers) {
      bytes += l.qkv.WeightBytes() + l.attn_output.WeightBytes() +
               l.gate_up.WeightBytes() + l.down.WeightBytes();
    }
    return bytes;
  }
};

namespace detail {

inline Status TensorShapeError(const GgufFile& file, const GgufTensorInfo& t,
                               size_t want_cols, size_t want_rows) {
  return MakeStatus(StatusCode::kDataLoss,
                    "%s: tensor '%.*s' has shape [%llu, %llu], expected "
                    "[%zu, %zu]",
                    file.source().c_str(), static_cast<int>(t.name.size()),
                    t.name.data(), static_cast<unsigned long long>(t.ne[0]),
                    static_cast<unsigned long long>(t.rows()), want_cols,
                    want_rows);
}

// Finds `name` and checks it is a cols x rows matrix (a vector when rows is
// 1 and the tensor is 1-D).
inline Status FindShaped(const GgufFile& file, const std::string& name,
                         size_t cols, size_t rows, GgufTensorInfo* out) {
  QKERN_RETURN_IF_ERROR(file.FindTensor(name, out));
  if (out->ne[0] != cols || out->rows() != rows || out->ne[2] != 1 ||
      out->ne[3] != 1) {
    return TensorShapeError(file, *out, cols, rows);
  }
  return Status::Ok();
}

inline Status LoadVector(const GgufFile& file, const std::string& name,
                         size_t n, std::vector<float>* out) {
  GgufTensorInfo t;
  QKERN_RETURN_IF_ERROR(FindShaped(file, name, n, 1, &t));
  out->resize(n);
  if (t.type == GgmlType::kF32 || t.type == GgmlType::kF16 ||
      t.type == GgmlType::kBF16) {
    DequantizeTensorRow(t, 0, out->data());
  } else {
    return MakeStatus(StatusCode::kUnsupported,
                      "%s: tensor '%s' has type %s; vectors must be F32, F16 "
                      "or BF16",
                      file.source().c_str(), name.c_str(), GgmlTypeName(t.type));
  }
  for (size_t i = 0; i < n; ++i) {
    if (!isfinite((*out)[i])) {
      return MakeStatus(StatusCode::kDataLoss,
                        "%s: tensor '%s' element %zu is not finite",
                        file.source().c_str(), name.c_str(), i);
    }
  }
  return Status::Ok();
}

struct MatrixSpec {
  std::string name;
  size_t rows;
  std::string bias;  // empty: none
};

class WeightLoader {
 public:
  WeightLoader(const GgufFile& file, const ParallelRunner* runner,
               LoadNotes* notes)
      : file_(file), runner_(runner), notes_(notes) {}

  // Packs matrices that read the same `cols` inputs into `proj`, stacked where
  // their native formats agree.
  Status Load(const std::vector<MatrixSpec>& specs, size_t cols,
              Projection* proj) {
    std::vector<NativeMatrix> mats(specs.size());
    std::vector<GgufTensorInfo> infos(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      QKERN_RETURN_IF_ERROR(
          FindShaped(file_, specs[i].name, cols, specs[i].rows, &infos[i]));
      QKERN_RETURN_IF_ERROR(ToNativeMatrix(infos[i], &mats[i], runner_));
      if (mats[i].converted) Note(infos[i], mats[i]);
    }
    proj->parts.clear();
    proj->out_features = 0;
    size_t i = 0;
    while (i < specs.size()) {
      size_t j = i + 1;
      while (j < specs.size() && mats[j].view.format == mats[i].view.format) ++j;
      std::vector<QuantizedWeights> views;
      for (size_t k = i; k < j; ++k) views.push_back(mats[k].view);
      ProjectionPart part;
      part.column = proj->out_features;
      QKERN_RETURN_IF_ERROR(PackStackedWeightsForCurrentTarget(
          views.data(), views.size(), &part.weights, runner_));
      bool any_bias = false;
      for (size_t k = i; k < j; ++k) any_bias |= !specs[k].bias.empty();
      if (any_bias) {
        part.bias.assign(part.weights.rows, 0.0f);
        size_t offset = 0;
        for (size_t k = i; k < j; ++k) {
          if (!specs[k].bias.empty()) {
            std::vector<float> b;
            QKERN_RETURN_IF_ERROR(
                LoadVector(file_, specs[k].bias, specs[k].rows, &b));
            memcpy(part.bias.data() + offset, b.data(), b.size() * sizeof(float));
          }
          offset += specs[k].rows;
        }
      }
      proj->out_features += part.weights.rows;
      proj->parts.push_back(std::move(part));
      i = j;
    }
    // The packed copy is all the forward pass reads: drop the file's pages.
    for (const GgufTensorInfo& t : infos) (void)file_.AdviseDontNeed(t);
    return Status::Ok();
  }

 private:
  void Note(const GgufTensorInfo& t, const NativeMatrix& m) {
    char line[256];
    snprintf(line, sizeof(line), "%s -> %s", GgmlTypeName(t.type),
             FormatInfo(m.view.format).name);
    for (const std::string& l : notes_->lines) {
      if (l.find(line) != std::string::npos) return;  // one line per pair
    }
    notes_->lines.push_back(std::string("converted ") + line +
                            " at load (no native kernel for " +
                            GgmlTypeName(t.type) + ")");
  }

  const GgufFile& file_;
  const ParallelRunner* runner_;
  LoadNotes* notes_;
};

}  // namespace detail

// Loads every tensor `config` calls for. Fills config->rope's frequency
// divisors from `rope_freqs.weight` when the file has it.
inline Status LoadModelWeights(const GgufFile& file, ModelConfig* config,
                               ModelWeights* out, LoadNotes* notes,
                               const ParallelRunner* runner = nullptr) {
  const ModelConfig& c = *config;
  ModelWeights w;
  detail::WeightLoader loader(file, runner, notes);

  GgufTensorInfo embd;
  QKERN_RETURN_IF_ERROR(
      detail::FindShaped(file, "token_embd.weight", c.dim, c.vocab_size, &embd));
  w.embedding.data = embd.data;
  w.embedding.type = embd.type;
  w.embedding.rows = c.vocab_size;
  w.embedding.cols = c.dim;
  w.embedding.tensor = embd;

  GgufTensorInfo rope_freqs;
  if (file.FindTensor("rope_freqs.weight", &rope_freqs).ok()) {
    std::vector<float> divisors;
    QKERN_RETURN_IF_ERROR(detail::LoadVector(file, "rope_freqs.weight",
                                             c.rope.rotary_dim / 2, &divisors));
    config->rope.frequency_divisors = std::move(divisors);
    QKERN_RETURN_IF_ERROR(ValidateRopeConfig(config->rope));
  }

  // The output head first: it is the largest matrix and the likeliest to be
  // converted, and while nothing else is packed yet its transient copies
  // (mapped source, converted blocks, packed panels) set the peak RSS lowest.
  QKERN_RETURN_IF_ERROR(
      detail::LoadVector(file, "output_norm.weight", c.dim, &w.output_norm));
  bool has_output = false;
  for (const GgufTensorInfo& t : file.ListTensors()) {
    if (t.name == "output.weight") has_output = true;
  }
  w.tied_output = !has_output;
  QKERN_RETURN_IF_ERROR(loader.Load(
      {{w.tied_output ? "token_embd.weight" : "output.weight", c.vocab_size, ""}},
      c.dim, &w.output));

  w.layers.resize(c.num_layers);
  for (size_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LayerWeights& l = w.layers[i];
    QKERN_RETURN_IF_ERROR(
        detail::LoadVector(file, p + "attn_norm.weight", c.dim, &l.attn_norm));
    QKERN_RETURN_IF_ERROR(
        detail::LoadVector(file, p + "ffn_norm.weight", c.dim, &l.ffn_norm));
    const bool bias = c.qkv_bias;
    QKERN_RETURN_IF_ERROR(loader.Load(
        {{p + "attn_q.weight", c.q_dim(), bias ? p + "attn_q.bias" : ""},
         {p + "attn_k.weight", c.kv_dim(), bias ? p + "attn_k.bias" : ""},
         {p + "attn_v.weight", c.kv_dim(), bias ? p + "attn_v.bias" : ""}},
        c.dim, &l.qkv));
    QKERN_RETURN_IF_ERROR(loader.Load(
        {{p + "attn_output.weight", c.dim, ""}}, c.q_dim(), &l.attn_output));
    QKERN_RETURN_IF_ERROR(loader.Load({{p + "ffn_gate.weight", c.ffn_dim, ""},
                                       {p + "ffn_up.weight", c.ffn_dim, ""}},
                                      c.dim, &l.gate_up));
    QKERN_RETURN_IF_ERROR(loader.Load({{p + "ffn_down.weight", c.dim, ""}},
                                      c.ffn_dim, &l.down));
  }
  *out = std::move(w);
  return Status::Ok();
}

// Row `token` of the embedding table as f32 (dim floats).
inline Status GatherEmbedding(const EmbeddingTable& table, int32_t token,
                              float* out) {
  if (token < 0 || static_cast<size_t>(token) >= table.rows) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "token id %d is outside the vocabulary [0, %zu)", token,
                      table.rows);
  }
  EmbeddingFormat format;
  switch (table.type) {
    case GgmlType::kF32: format = EmbeddingFormat::kF32; break;
    case GgmlType::kF16: format = EmbeddingFormat::kF16; break;
    case GgmlType::kBF16: format = EmbeddingFormat::kBF16; break;
    case GgmlType::kQ4_0: format = EmbeddingFormat::kQ4_0; break;
    case GgmlType::kQ4_1: format = EmbeddingFormat::kQ4_1; break;
    case GgmlType::kQ8_0: format = EmbeddingFormat::kQ8_0; break;
    default:
      // K-quants and Q5: one row through the reference decoder.
      detail::DequantizeTensorRow(table.tensor, static_cast<size_t>(token), out);
      return Status::Ok();
  }
  detail::EmbeddingRowUnchecked(table.data, format, table.cols,
                        static_cast<size_t>(token), out);
  return Status::Ok();
}

}  // namespace qkern

#endif  // QKERN_MODEL_MODEL_WEIGHTS_H_
