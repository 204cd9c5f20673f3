// Quantized matmul: Y[M x N] = X[M x K] * W^T (+ bias), W an N x K weight
// matrix in any WeightFormat, X and Y f32.
//
//   PackedWeights w;
//   PackWeightsForCurrentTarget(weights, &w);      // once, at load
//   MatMulWorkspace ws;
//   MatMul(w, x, m, /*ldx=*/K, y, /*ldy=*/N, bias, &ws, &runner);
//
// M = 1 is decode (a GEMV streaming the weights once); larger M is prefill.
// Activations are quantized to int8 per block of 32 on the fly. Packing
// picks the panel height and layout the running CPU's kernel reads (4-byte
// quads for SDOT / USDOT / VNNI / svdot, 8-byte rows for Arm i8mm MMLA), so
// weights are packed on the machine (and with the dot path mask) that runs
// them; MatMul refuses weights packed for another.
#ifndef QKERN_KERNELS_MATMUL_H_
#define QKERN_KERNELS_MATMUL_H_

#include <stddef.h>
#include <stdint.h>

#include "qkern/base/aligned_buffer.h"
#include "qkern/base/status.h"
#include "qkern/dispatch.h"
#include "qkern/kernels/matmul_types.h"
#include "qkern/quant/packed_weights.h"
#include "qkern/threading/parallel.h"

namespace qkern {

// Panel height the running target's kernels expect (see packed_weights.h).
inline size_t PanelRowsForCurrentTarget() { return detail::DispatchPanelRows(); }

// Panel layout the running target and dot path read: kMmla8 on Arm CPUs with
// i8mm (NEON and SVE targets; SetDotPathMask can turn it off), else kQuad4.
inline PanelLayout PanelLayoutForCurrentTarget() {
  return detail::DispatchPanelLayout();
}

inline Status PackWeightsForCurrentTarget(
    const QuantizedWeights& w, PackedWeights* out,
    const ParallelRunner* runner = nullptr) {
  return PackWeights(w, PanelRowsForCurrentTarget(),
                     PanelLayoutForCurrentTarget(), out, runner);
}

// Rows of parts[0], parts[1], ... packed as one matrix (e.g. fused QKV).
inline Status PackStackedWeightsForCurrentTarget(
    const QuantizedWeights* parts, size_t num_parts, PackedWeights* out,
    const ParallelRunner* runner = nullptr) {
  return PackStackedWeights(parts, num_parts, PanelRowsForCurrentTarget(),
                            PanelLayoutForCurrentTarget(), out, runner);
}

// Reusable scratch for MatMul: grows to the largest call seen, so steady-state
// decoding allocates nothing.
class MatMulWorkspace {
 public:
  Status Reserve(size_t m, size_t k) {
    const size_t bytes = MatMulWorkspaceBytes(m, k);
    if (!buffer_.Reserve(bytes)) {
      return MakeStatus(StatusCode::kResourceExhausted,
                        "MatMul workspace: cannot allocate %zu bytes", bytes);
    }
    return Status::Ok();
  }
  void* data() { return buffer_.data(); }
  size_t size() const { return buffer_.size(); }

 private:
  AlignedBuffer buffer_;
};

// Validates a call; every check is O(1).
inline Status ValidateMatMul(const PackedWeights& w, const float* x, size_t m,
                             size_t ldx, const float* y, size_t ldy,
                             const void* workspace, size_t workspace_bytes) {
  if (w.empty()) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "MatMul: weights are not packed");
  }
  if (w.panel_rows != PanelRowsForCurrentTarget()) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "MatMul: weights packed with panel_rows = %zu, but the "
                      "running target needs %zu; pack with "
                      "PackWeightsForCurrentTarget",
                      w.panel_rows, PanelRowsForCurrentTarget());
  }
  const PanelLayout layout = PanelLayoutForCurrentTarget();
  if (w.layout != layout) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "MatMul: weights packed in the %s panel layout, but the "
                      "running target and dot path (%s) read %s; pack with "
                      "PackWeightsForCurrentTarget",
                      PanelLayoutName(w.layout), detail::DispatchDotPath(),
                      PanelLayoutName(layout));
  }
  if (m == 0) return Status::Ok();
  if (x == nullptr || y == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument, "MatMul: %s is null",
                      x == nullptr ? "X" : "Y");
  }
  if (ldx < w.cols) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "MatMul: ldx = %zu is smaller than K = %zu", ldx, w.cols);
  }
  if (ldy < w.rows) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "MatMul: ldy = %zu is smaller than N = %zu", ldy, w.rows);
  }
  size_t x_elems, y_elems;
  if (detail::MulOverflows(m - 1, ldx, &x_elems) ||
      detail::MulOverflows(m - 1, ldy, &y_elems) ||
      detail::MulOverflows(m, w.cols, &x_elems) ||
      x_elems > (size_t{1} << 48)) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "MatMul: M = %zu rows with strides %zu / %zu overflow", m,
                      ldx, ldy);
  }
  if (workspace == nullptr || workspace_bytes < MatMulWorkspaceBytes(m, w.cols)) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "MatMul: workspace of %zu bytes, need %zu", workspace_bytes,
                      MatMulWorkspaceBytes(m, w.cols));
  }
  return Status::Ok();
}

// Y = X * W^T + bias, with caller-provided scratch of
// MatMulWorkspaceBytes(m, K) bytes. `bias` (N floats) may be null; `runner`
// null runs on the calling thread.
inline Status MatMul(const PackedWeights& w, const float* x, size_t m,
                     size_t ldx, float* y, size_t ldy, const float* bias,
                     void* workspace, size_t workspace_bytes,
                     const ParallelRunner* runner = nullptr) {
  QKERN_RETURN_IF_ERROR(
      ValidateMatMul(w, x, m, ldx, y, ldy, workspace, workspace_bytes));
  if (m == 0) return Status::Ok();
  MatMulCall call{&w, x, m, ldx, y, ldy, bias, workspace, runner};
  detail::DispatchMatMul(call);
  return Status::Ok();
}

inline Status MatMul(const PackedWeights& w, const float* x, size_t m,
                     size_t ldx, float* y, size_t ldy, const float* bias,
                     MatMulWorkspace* workspace,
                     const ParallelRunner* runner = nullptr) {
  if (workspace == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument, "MatMul: workspace is null");
  }
  QKERN_RETURN_IF_ERROR(workspace->Reserve(m, w.cols));
  return MatMul(w, x, m, ldx, y, ldy, bias, workspace->data(),
                workspace->size(), runner);
}

}  // namespace qkern

#endif  // QKERN_KERNELS_MATMUL_H_
