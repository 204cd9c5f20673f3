// qkern: quantized transformer kernels. One include for the whole public API.
#ifndef QKERN_QKERN_H_
#define QKERN_QKERN_H_

#include "qkern/base/aligned_buffer.h"
#include "qkern/base/f16.h"
#include "qkern/base/status.h"
#include "qkern/kernels/attention.h"
#include "qkern/kernels/matmul.h"
#include "qkern/kernels/ops.h"
#include "qkern/kernels/rope.h"
#include "qkern/kv/kv_format.h"
#include "qkern/kv/paged_kv_cache.h"
#include "qkern/model/gguf_reader.h"
#include "qkern/quant/block_formats.h"
#include "qkern/quant/kquants_ref.h"
#include "qkern/quant/packed_weights.h"
#include "qkern/quant/quantize_ref.h"
#include "qkern/target.h"
#include "qkern/threading/parallel.h"
#include "qkern/threading/thread_pool.h"

#endif  // QKERN_QKERN_H_
