/* qkern's C API: quantized matmul for runtimes written in C (or any language
 * with a C FFI). Link the `qkern::qkern_c` CMake target.
 *
 * Every call that can fail returns a qkern_status (0 = ok) and, if `error` is
 * non-null, writes a NUL-terminated message of at most error_len bytes
 * naming what was wrong. Objects are opaque and freed by their _free call.
 */
#ifndef QKERN_CAPI_QKERN_C_H_
#define QKERN_CAPI_QKERN_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum qkern_status {
  QKERN_OK = 0,
  QKERN_INVALID_ARGUMENT = 1,
  QKERN_OUT_OF_RANGE = 2,
  QKERN_UNSUPPORTED = 3,
  QKERN_RESOURCE_EXHAUSTED = 4,
  QKERN_DATA_LOSS = 5,
  QKERN_IO_ERROR = 6
} qkern_status;

/* Same values as qkern::WeightFormat. */
typedef enum qkern_weight_format {
  QKERN_Q4_0 = 0,
  QKERN_Q4_1 = 1,
  QKERN_Q8_0 = 2,
  QKERN_INT4_SYM = 3,
  QKERN_INT4_ASYM = 4,
  QKERN_INT8_PER_CHANNEL = 5
} qkern_weight_format;

/* An N x K weight matrix as stored by the caller (see
 * qkern/quant/block_formats.h for each format's layout). */
typedef struct qkern_weights_desc {
  qkern_weight_format format;
  size_t rows;       /* N */
  size_t cols;       /* K */
  size_t group_size; /* INT4 formats: 32, 64, 128, ...; ignored otherwise */
  const void* codes;
  const void* scales;
  const void* mins;
} qkern_weights_desc;

/* A host's own threads: run(self, n, task, ctx) must call task(ctx, i, w)
 * for every i in [0, n), w in [0, num_workers), and return when all ran. */
typedef void (*qkern_task_fn)(void* ctx, size_t task_index, size_t worker_index);
typedef struct qkern_parallel_runner {
  void* self;
  size_t num_workers;
  void (*run)(void* self, size_t num_tasks, qkern_task_fn task, void* ctx);
} qkern_parallel_runner;

typedef struct qkern_packed_weights qkern_packed_weights;
typedef struct qkern_thread_pool qkern_thread_pool;

/* The SIMD target and int8 dot path in use, e.g. "AVX3_DL", "avx512-vnni".
 * Static strings. */
const char* qkern_active_target(void);
const char* qkern_active_dot_path(void);

/* Packs weights for this CPU. The source may be freed afterwards. */
qkern_status qkern_pack_weights(const qkern_weights_desc* desc,
                                qkern_packed_weights** out, char* error,
                                size_t error_len);
void qkern_packed_weights_free(qkern_packed_weights* weights);
/* Bytes of packed weights a GEMV reads. */
size_t qkern_packed_weights_bytes(const qkern_packed_weights* weights);

/* Scratch MatMul needs for m rows of K inputs. */
size_t qkern_matmul_workspace_bytes(size_t m, size_t k);

/* Y[m x N] = X[m x K] * W^T (+ bias[N] if non-null). runner may be null
 * (calling thread only). */
qkern_status qkern_matmul(const qkern_packed_weights* weights, const float* x,
                          size_t m, size_t ldx, float* y, size_t ldy,
                          const float* bias, void* workspace,
                          size_t workspace_bytes,
                          const qkern_parallel_runner* runner, char* error,
                          size_t error_len);

/* qkern's own thread pool (num_threads includes the calling thread; 0 picks
 * the number of performance cores). */
qkern_thread_pool* qkern_thread_pool_create(size_t num_threads);
void qkern_thread_pool_free(qkern_thread_pool* pool);
qkern_parallel_runner qkern_thread_pool_runner(qkern_thread_pool* pool);

#ifdef __cplusplus
}  /* extern "C" */
#endif

/* The definitions, compiled into exactly one C++ translation unit (the
 * qkern_c CMake target does this). */
#if defined(QKERN_C_API_IMPLEMENTATION) && defined(__cplusplus)
#include "qkern/capi/qkern_c_impl.h"
#endif

#endif /* QKERN_CAPI_QKERN_C_H_ */
