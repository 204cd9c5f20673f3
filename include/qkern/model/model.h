// A Llama-family model opened from a GGUF file: the mapped file, its config
// and its packed weights. Immutable once loaded; several Decoders (each with
// its own KV cache) may share one Model.
//
//   Model model;
//   QKERN_RETURN_IF_ERROR(Model::Load("SmolLM2-135M-Instruct.Q4_1.gguf", &model));
//   for (const std::string& note : model.notes().lines) fprintf(stderr, ...);
#ifndef QKERN_MODEL_MODEL_H_
#define QKERN_MODEL_MODEL_H_

#include <memory>
#include <string>
#include <utility>

#include "qkern/base/status.h"
#include "qkern/model/gguf_reader.h"
#include "qkern/model/model_config.h"
#include "qkern/model/model_weights.h"
#include "qkern/threading/parallel.h"

namespace qkern {

class Model {
 public:
  Model() = default;
  Model(Model&&) = default;
  Model& operator=(Model&&) = default;

  // Maps, validates and packs; `runner` (optional) parallelises packing.
  // Every error names the file and what was wrong with it.
  static Status Load(const std::string& path, Model* out,
                     const ParallelRunner* runner = nullptr) {
    if (out == nullptr) {
      return MakeStatus(StatusCode::kInvalidArgument, "Model::Load: out is null");
    }
    auto state = std::make_unique<State>();
    QKERN_RETURN_IF_ERROR(GgufFile::Open(path, &state->file));
    QKERN_RETURN_IF_ERROR(ReadModelConfig(state->file, &state->config));
    QKERN_RETURN_IF_ERROR(LoadModelWeights(state->file, &state->config,
                                           &state->weights, &state->notes,
                                           runner));
    out->state_ = std::move(state);
    return Status::Ok();
  }

  bool loaded() const { return state_ != nullptr; }
  const ModelConfig& config() const { return state_->config; }
  const ModelWeights& weights() const { return state_->weights; }
  const GgufFile& file() const { return state_->file; }
  const LoadNotes& notes() const { return state_->notes; }

 private:
  // On the heap so that pointers into it (the embedding table's tensor info)
  // survive moves of the Model.
  struct State {
    GgufFile file;
    ModelConfig config;
    ModelWeights weights;
    LoadNotes notes;
  };
  std::unique_ptr<State> state_;
};

}  // namespace qkern

#endif  // QKERN_MODEL_MODEL_H_
