/* The C API used from C: pack Q4_0 blocks, run a GEMV on qkern's pool and
 * through a host runner, and check the errors come back as status + text. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "qkern/capi/qkern_c.h"

static int g_failed = 0, g_passed = 0;
#define CHECK(cond)                                               \
  do {                                                            \
    if (cond) {                                                   \
      ++g_passed;                                                 \
    } else {                                                      \
      ++g_failed;                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                             \
  } while (0)

enum { kRows = 9, kCols = 64, kBlocks = kRows * kCols / 32 };

/* Q4_0 block: f16 scale + 16 bytes of nibbles (value = d * (q - 8)). */
typedef struct {
  uint16_t d;
  uint8_t qs[16];
} BlockQ4_0;

/* A host "runner" that runs tasks serially and counts calls. */
static int g_host_calls = 0;
static void HostRun(void* self, size_t n, qkern_task_fn task, void* ctx) {
  (void)self;
  ++g_host_calls;
  for (size_t i = 0; i < n; ++i) task(ctx, i, 0);
}

int main(void) {
  BlockQ4_0 blocks[kBlocks];
  /* d = 1.0 (f16 0x3C00); code q in row r, column c: (r + c) % 16. */
  for (int b = 0; b < kBlocks; ++b) {
    const int row = b / (kCols / 32), col0 = (b % (kCols / 32)) * 32;
    blocks[b].d = 0x3C00;
    for (int j = 0; j < 16; ++j) {
      const int lo = (row + col0 + j) % 16, hi = (row + col0 + j + 16) % 16;
      blocks[b].qs[j] = (uint8_t)(lo | (hi << 4));
    }
  }
  qkern_weights_desc desc;
  memset(&desc, 0, sizeof(desc));
  desc.format = QKERN_Q4_0;
  desc.rows = kRows;
  desc.cols = kCols;
  desc.codes = blocks;

  char error[256];
  qkern_packed_weights* packed = NULL;
  CHECK(qkern_pack_weights(&desc, &packed, error, sizeof(error)) == QKERN_OK);
  CHECK(packed != NULL);
  CHECK(qkern_packed_weights_bytes(packed) >= (size_t)kBlocks * 18);
  printf("C API on %s / %s\n", qkern_active_target(), qkern_active_dot_path());

  /* x = 1 in every column: codes are exact in int8, so with d = 1 each output
   * is exactly sum_c (q - 8), an integer well inside f32's exact range. */
  float x[kCols], y[kRows];
  for (int i = 0; i < kCols; ++i) x[i] = 1.0f;
  static unsigned char workspace[1 << 16];
  CHECK(qkern_matmul_workspace_bytes(1, kCols) <= sizeof(workspace));

  qkern_thread_pool* pool = qkern_thread_pool_create(2);
  CHECK(pool != NULL);
  qkern_parallel_runner runner = qkern_thread_pool_runner(pool);
  CHECK(runner.num_workers == 2);
  for (int pass = 0; pass < 2; ++pass) {
    qkern_parallel_runner host = {NULL, 1, HostRun};
    const qkern_parallel_runner* use = pass == 0 ? &runner : &host;
    memset(y, 0, sizeof(y));
    CHECK(qkern_matmul(packed, x, 1, kCols, y, kRows, NULL, workspace,
                       sizeof(workspace), use, error, sizeof(error)) == QKERN_OK);
    for (int r = 0; r < kRows; ++r) {
      int expect = 0;
      for (int c = 0; c < kCols; ++c) expect += (r + c) % 16 - 8;
      CHECK(y[r] == (float)expect);
    }
  }

  /* Errors: status code plus a message naming the problem. */
  CHECK(qkern_matmul(packed, x, 1, kCols - 1, y, kRows, NULL, workspace,
                     sizeof(workspace), NULL, error, sizeof(error)) ==
        QKERN_INVALID_ARGUMENT);
  CHECK(strstr(error, "ldx") != NULL);
  desc.cols = 48;
  qkern_packed_weights* bad = NULL;
  CHECK(qkern_pack_weights(&desc, &bad, error, sizeof(error)) ==
        QKERN_INVALID_ARGUMENT);
  CHECK(bad == NULL);
  CHECK(strstr(error, "K = 48") != NULL);
  /* A tiny error buffer is truncated, never overrun. */
  char tiny[4] = {'x', 'x', 'x', 'x'};
  CHECK(qkern_pack_weights(&desc, &bad, tiny, 3) == QKERN_INVALID_ARGUMENT);
  CHECK(tiny[2] == '\0' && tiny[3] == 'x');
  CHECK(qkern_matmul(NULL, x, 1, kCols, y, kRows, NULL, workspace,
                     sizeof(workspace), NULL, NULL, 0) == QKERN_INVALID_ARGUMENT);

  qkern_thread_pool_free(pool);
  qkern_packed_weights_free(packed);
  printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
