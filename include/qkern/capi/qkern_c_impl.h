// Definitions of the C API (see qkern_c.h). Included by exactly one C++
// translation unit with QKERN_C_API_IMPLEMENTATION defined.
#ifndef QKERN_CAPI_QKERN_C_IMPL_H_
#define QKERN_CAPI_QKERN_C_IMPL_H_

#include <string.h>

#include <new>
#include <string>

#include "qkern/capi/qkern_c.h"
#include "qkern/kernels/matmul.h"
#include "qkern/target.h"
#include "qkern/threading/thread_pool.h"

struct qkern_packed_weights {
  qkern::PackedWeights packed;
};

struct qkern_thread_pool {
  explicit qkern_thread_pool(size_t n) : pool(n) {}
  qkern::ThreadPool pool;
};

namespace qkern {
namespace capi_detail {

inline qkern_status Report(const Status& s, char* error, size_t error_len) {
  if (error != nullptr && error_len > 0) {
    const size_t n = s.message().size() < error_len - 1 ? s.message().size()
                                                         : error_len - 1;
    memcpy(error, s.message().data(), n);
    error[n] = '\0';
  }
  return static_cast<qkern_status>(s.code());
}

// ParallelRunner and qkern_parallel_runner have the same members; copy them
// field by field rather than rely on layout.
inline ParallelRunner FromC(const qkern_parallel_runner& r) {
  ParallelRunner out;
  out.self = r.self;
  out.num_workers = r.num_workers;
  out.run = r.run;
  return out;
}

}  // namespace capi_detail
}  // namespace qkern

extern "C" {

const char* qkern_active_target(void) {
  static thread_local std::string name;
  name = qkern::ActiveTargetName();
  return name.c_str();
}

const char* qkern_active_dot_path(void) {
  static thread_local std::string name;
  name = qkern::ActiveDotPath();
  return name.c_str();
}

qkern_status qkern_pack_weights(const qkern_weights_desc* desc,
                                qkern_packed_weights** out, char* error,
                                size_t error_len) {
  using qkern::capi_detail::Report;
  if (desc == nullptr || out == nullptr) {
    return Report(qkern::MakeStatus(qkern::StatusCode::kInvalidArgument,
                                    "qkern_pack_weights: %s is null",
                                    desc == nullptr ? "desc" : "out"),
                  error, error_len);
  }
  *out = nullptr;
  qkern::QuantizedWeights w;
  w.format = static_cast<qkern::WeightFormat>(desc->format);
  w.rows = desc->rows;
  w.cols = desc->cols;
  w.group_size = desc->group_size;
  w.codes = desc->codes;
  w.scales = desc->scales;
  w.mins = desc->mins;
  qkern_packed_weights* result = new (std::nothrow) qkern_packed_weights;
  if (result == nullptr) {
    return Report(qkern::MakeStatus(qkern::StatusCode::kResourceExhausted,
                                    "qkern_pack_weights: out of memory"),
                  error, error_len);
  }
  const qkern::Status s = qkern::PackWeightsForCurrentTarget(w, &result->packed);
  if (!s.ok()) {
    delete result;
    return Report(s, error, error_len);
  }
  *out = result;
  return QKERN_OK;
}

void qkern_packed_weights_free(qkern_packed_weights* weights) { delete weights; }

size_t qkern_packed_weights_bytes(const qkern_packed_weights* weights) {
  return weights == nullptr ? 0 : weights->packed.WeightBytes();
}

size_t qkern_matmul_workspace_bytes(size_t m, size_t k) {
  return qkern::MatMulWorkspaceBytes(m, k);
}

qkern_status qkern_matmul(const qkern_packed_weights* weights, const float* x,
                          size_t m, size_t ldx, float* y, size_t ldy,
                          const float* bias, void* workspace,
                          size_t workspace_bytes,
                          const qkern_parallel_runner* runner, char* error,
                          size_t error_len) {
  using qkern::capi_detail::Report;
  if (weights == nullptr) {
    return Report(qkern::MakeStatus(qkern::StatusCode::kInvalidArgument,
                                    "qkern_matmul: weights is null"),
                  error, error_len);
  }
  qkern::ParallelRunner r;
  if (runner != nullptr) r = qkern::capi_detail::FromC(*runner);
  return Report(qkern::MatMul(weights->packed, x, m, ldx, y, ldy, bias,
                              workspace, workspace_bytes,
                              runner != nullptr ? &r : nullptr),
                error, error_len);
}

qkern_thread_pool* qkern_thread_pool_create(size_t num_threads) {
  if (num_threads == 0) num_threads = qkern::ThreadPool::DefaultNumThreads();
  return new (std::nothrow) qkern_thread_pool(num_threads);
}

void qkern_thread_pool_free(qkern_thread_pool* pool) { delete pool; }

qkern_parallel_runner qkern_thread_pool_runner(qkern_thread_pool* pool) {
  qkern_parallel_runner out = {nullptr, 1, nullptr};
  if (pool == nullptr) return out;
  const qkern::ParallelRunner r = pool->pool.Runner();
  out.self = r.self;
  out.num_workers = r.num_workers;
  out.run = r.run;
  return out;
}

}  // extern "C"

#endif  // QKERN_CAPI_QKERN_C_IMPL_H_
