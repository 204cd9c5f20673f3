// Brings a GGUF weight matrix to a format the matmul kernels multiply.
//
// Q4_0, Q4_1 and Q8_0 are used in place (the mapped file's blocks). The rest
// are converted once, at load, to the nearest native format:
//   Q4_K              -> Q4_1: each 32-value sub-block keeps its 4-bit codes;
//                        its scale d*sc and min -dmin*mn become the f16 d and
//                        m of a Q4_1 block (a relative change <= 2^-11 of the
//                        scale, far below the 4-bit step).
//   Q5_0, Q5_1, Q5_K,
//   Q6_K, F16, BF16, F32 -> Q8_0 (8 bits hold 5- and 6-bit codes with a
//                        rounding error below their own step).
#ifndef QKERN_MODEL_TENSOR_CONVERT_H_
#define QKERN_MODEL_TENSOR_CONVERT_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "qkern/base/aligned_buffer.h"
#include "qkern/base/f16.h"
#include "qkern/base/status.h"
#include "qkern/model/gguf_reader.h"
#include "qkern/quant/block_formats.h"
#include "qkern/quant/kquants_ref.h"
#include "qkern/quant/quantize_ref.h"
#include "qkern/threading/parallel.h"

namespace qkern {

// A weight matrix in a native GGUF block format, in place or converted.
struct NativeMatrix {
  QuantizedWeights view;   // rows x cols, GGUF blocks
  GgmlType source_type = GgmlType::kF32;
  bool converted = false;  // view.codes points into `owned`
  AlignedBuffer owned;
};

namespace detail {

// Dequantizes row `r` (cols values) of a tensor of any type qkern reads.
inline void DequantizeTensorRow(const GgufTensorInfo& t, size_t r,
                                float* out) {
  const size_t cols = static_cast<size_t>(t.ne[0]);
  const uint8_t* row =
      static_cast<const uint8_t*>(t.data) + r * static_cast<size_t>(t.row_bytes());
  switch (t.type) {
    case GgmlType::kF32:
      memcpy(out, row, cols * sizeof(float));
      return;
    case GgmlType::kF16:
      for (size_t j = 0; j < cols; ++j) {
        f16_t h;
        memcpy(&h, row + 2 * j, 2);
        out[j] = F32FromF16(h);
      }
      return;
    case GgmlType::kBF16:
      for (size_t j = 0; j < cols; ++j) {
        bf16_t h;
        memcpy(&h, row + 2 * j, 2);
        out[j] = F32FromBF16(h);
      }
      return;
    case GgmlType::kQ4_0:
      ref::DequantizeQ4_0(reinterpret_cast<const BlockQ4_0*>(row), cols, out);
      return;
    case GgmlType::kQ4_1:
      ref::DequantizeQ4_1(reinterpret_cast<const BlockQ4_1*>(row), cols, out);
      return;
    case GgmlType::kQ8_0:
      ref::DequantizeQ8_0(reinterpret_cast<const BlockQ8_0*>(row), cols, out);
      return;
    case GgmlType::kQ5_0:
      ref::DequantizeQ5_0(reinterpret_cast<const BlockQ5_0*>(row), cols, out);
      return;
    case GgmlType::kQ5_1:
      ref::DequantizeQ5_1(reinterpret_cast<const BlockQ5_1*>(row), cols, out);
      return;
    case GgmlType::kQ4_K:
      ref::DequantizeQ4_K(reinterpret_cast<const BlockQ4_K*>(row), cols, out);
      return;
    case GgmlType::kQ5_K:
      ref::DequantizeQ5_K(reinterpret_cast<const BlockQ5_K*>(row), cols, out);
      return;
    case GgmlType::kQ6_K:
      ref::DequantizeQ6_K(reinterpret_cast<const BlockQ6_K*>(row), cols, out);
      return;
    default:
      memset(out, 0, cols * sizeof(float));  // unreachable: FindTensor refused
      return;
  }
}

// One Q4_K super-block (256 values) as eight Q4_1 blocks.
inline void Q4KToQ4_1(const BlockQ4_K& in, BlockQ4_1* out) {
  const float d = F32FromF16(in.d);
  const float dmin = F32FromF16(in.dmin);
  for (int s = 0; s < 8; ++s) {
    int scale, min;
    ref::UnpackKScaleMin(in.scales, s, &scale, &min);
    out[s].d = F16FromF32(d * static_cast<float>(scale));
    out[s].m = F16FromF32(-dmin * static_cast<float>(min));
    const uint8_t* chunk = in.qs + (s / 2) * 32;
    const int shift = (s & 1) * 4;
    for (int j = 0; j < 16; ++j) {
      const int lo = (chunk[j] >> shift) & 15;
      const int hi = (chunk[j + 16] >> shift) & 15;
      out[s].qs[j] = static_cast<uint8_t>(lo | (hi << 4));
    }
  }
}

}  // namespace detail

inline bool IsNativeWeightType(GgmlType type) {
  return type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1 ||
         type == GgmlType::kQ8_0;
}

// The native format a GGUF type is multiplied in.
inline WeightFormat NativeFormatFor(GgmlType type) {
  switch (type) {
    case GgmlType::kQ4_0:
      return WeightFormat::kQ4_0;
    case GgmlType::kQ4_1:
    case GgmlType::kQ4_K:
      return WeightFormat::kQ4_1;
    default:
      return WeightFormat::kQ8_0;
  }
}

// `t` (a 2-D tensor from GgufFile::FindTensor) as native blocks; converts on
// `runner` when needed.
inline Status ToNativeMatrix(const GgufTensorInfo& t, NativeMatrix* out,
                             const ParallelRunner* runner = nullptr) {
  const size_t cols = static_cast<size_t>(t.ne[0]);
  const size_t rows = static_cast<size_t>(t.rows());
  if (cols % kQuantBlock != 0 || rows == 0) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "tensor '%.*s': row length %zu is not a multiple of %zu",
                      static_cast<int>(t.name.size()), t.name.data(), cols,
                      kQuantBlock);
  }
  out->source_type = t.type;
  out->view = QuantizedWeights();
  out->view.rows = rows;
  out->view.cols = cols;
  out->view.format = NativeFormatFor(t.type);
  out->owned.Free();
  if (IsNativeWeightType(t.type)) {
    out->converted = false;
    out->view.codes = t.data;
    return Status::Ok();
  }
  const size_t blocks_per_row = cols / kQuantBlock;
  const size_t block_bytes = FormatInfo(out->view.format).block_bytes;
  if (!out->owned.Allocate(rows * blocks_per_row * block_bytes)) {
    return MakeStatus(StatusCode::kResourceExhausted,
                      "tensor '%.*s': cannot allocate %zu bytes to convert it",
                      static_cast<int>(t.name.size()), t.name.data(),
                      rows * blocks_per_row * block_bytes);
  }
  out->converted = true;
  uint8_t* dst = out->owned.data();
  if (t.type == GgmlType::kQ4_K) {
    if (cols % kSuperBlock != 0) {
      return MakeStatus(StatusCode::kDataLoss,
                        "tensor '%.*s': Q4_K row length %zu is not a multiple "
                        "of 256",
                        static_cast<int>(t.name.size()), t.name.data(), cols);
    }
    const size_t supers = rows * cols / kSuperBlock;
    ParallelFor(runner, (supers + 255) / 256, [&](size_t task, size_t) {
      const size_t end = (task + 1) * 256 < supers ? (task + 1) * 256 : supers;
      for (size_t b = task * 256; b < end; ++b) {
        detail::Q4KToQ4_1(static_cast<const BlockQ4_K*>(t.data)[b],
                          reinterpret_cast<BlockQ4_1*>(dst) + 8 * b);
      }
    });
  } else {
    const size_t rows_per_task = 64;
    const size_t tasks = (rows + rows_per_task - 1) / rows_per_task;
    ParallelFor(runner, tasks, [&](size_t task, size_t) {
      std::vector<float> row(cols);
      const size_t end =
          (task + 1) * rows_per_task < rows ? (task + 1) * rows_per_task : rows;
      for (size_t r = task * rows_per_task; r < end; ++r) {
        detail::DequantizeTensorRow(t, r, row.data());
        ref::QuantizeQ8_0(row.data(), cols,
                          reinterpret_cast<BlockQ8_0*>(dst) + r * blocks_per_row);
      }
    });
  }
  out->view.codes = dst;
  return Status::Ok();
}

}  // namespace qkern

#endif  // QKERN_MODEL_TENSOR_CONVERT_H_
