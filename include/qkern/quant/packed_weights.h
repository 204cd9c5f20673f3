// The packed ("panel") weight layouts the matmul kernels read, and the packer
// that builds them from any WeightFormat.
//
// Every format is brought to one form: unsigned codes u (4 or 8 bits) with
//   value = d * u + m            (d, m per group of G values along K)
// Q4_0 / INT4_SYM: u = q, m = -8 d.   Q8_0 / INT8: u = q + 128, m = -128 d.
// Q4_1 / INT4_ASYM: u = q, m stored.  Per-channel INT8 keeps d = 1 per group
// and applies its f32 row scale in the epilogue, so nothing is rounded.
// Symmetric formats store no m: the kernel derives it from `sym_offset`.
//
// Layout. Rows are cut into panels of R = panel_rows rows (the tail panel is
// zero-padded). A panel holds, for each group g along K, in order:
//   G/32 sub-blocks of codes, then R f16 scales d, then (if has_min) R f16 m.
// A sub-block covers 32 consecutive k for all R rows (32 R or 16 R bytes) and
// is a sequence of "runs": W bytes of one row adjacent, then the same k of the
// next row, for all R rows; then the next W k. The run width W is the panel
// layout, matched to the dot instruction of the running CPU:
//
//   kQuad4 (W = 4): a 32-bit lane per row, so one SIMD load gives rows
//     r..r+L-1 x 4 k, exactly what VNNI vpdpbusd / SDOT / USDOT / svdot
//     consume.
//       8-bit: quad q in [0, 8): bytes [q*4R + 4r + j] = u[r][4q + j]
//       4-bit: quad q in [0, 4): low nibble = u[r][4q + j], high nibble =
//              u[r][16 + 4q + j] — the nibble order of a GGUF Q4 block, so
//              packing Q4_0/Q4_1 is a pure 4-byte transpose.
//   kMmla8 (W = 8): 8 k of one row, then 8 k of the next, so each 16 bytes
//     (each 128-bit segment of an SVE vector) is the 2 x 8 matrix that the
//     i8mm USMMLA / svusmmla instructions multiply (rows 2i, 2i+1).
//       8-bit: run c in [0, 4): bytes [c*8R + 8r + j] = u[r][8c + j]
//       4-bit: run c in [0, 2): low nibble = u[r][8c + j], high nibble =
//              u[r][16 + 8c + j]  (again the GGUF nibble order).
//
// R and the layout are chosen for the running SIMD target and dot path at
// pack time (R: two vectors of 32-bit lanes; kMmla8 only on Arm CPUs with
// i8mm): see PackWeightsForCurrentTarget() in qkern/kernels/matmul.h.
#ifndef QKERN_QUANT_PACKED_WEIGHTS_H_
#define QKERN_QUANT_PACKED_WEIGHTS_H_

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <vector>

#include "qkern/base/aligned_buffer.h"
#include "qkern/base/f16.h"
#include "qkern/base/status.h"
#include "qkern/quant/block_formats.h"
#include "qkern/threading/parallel.h"

namespace qkern {

// How the codes of a sub-block are ordered (see the top of this file).
enum class PanelLayout : uint32_t {
  kQuad4 = 0,  // 4-byte runs: SDOT / USDOT / VNNI / svdot / pmaddubsw
  kMmla8 = 1,  // 8-byte runs: USMMLA / svusmmla (Arm i8mm)
};

inline const char* PanelLayoutName(PanelLayout layout) {
  return layout == PanelLayout::kMmla8 ? "mmla8" : "quad4";
}

// Bytes of one row that lie adjacent in a sub-block.
inline size_t PanelRunBytes(PanelLayout layout) {
  return layout == PanelLayout::kMmla8 ? 8 : 4;
}

struct PackedWeights {
  WeightFormat format = WeightFormat::kQ4_0;  // what it was packed from
  size_t rows = 0;                            // N
  size_t cols = 0;                            // K
  uint32_t bits = 4;                          // 4 or 8
  size_t group_size = kQuantBlock;            // G, a multiple of 32
  bool has_min = false;
  int32_t sym_offset = 8;  // m = -sym_offset * d when !has_min
  size_t panel_rows = 0;   // R
  PanelLayout layout = PanelLayout::kQuad4;
  size_t num_panels = 0;
  AlignedBuffer storage;   // panels, then (per-channel) f32 row scales
  const float* row_scales = nullptr;  // num_panels * R entries, or null

  size_t SubBlockBytes() const { return panel_rows * kQuantBlock * bits / 8; }
  size_t GroupBytes() const {
    return group_size / kQuantBlock * SubBlockBytes() +
           panel_rows * sizeof(f16_t) * (has_min ? 2 : 1);
  }
  size_t PanelBytes() const { return cols / group_size * GroupBytes(); }
  const uint8_t* Panel(size_t p) const {
    return storage.data() + p * PanelBytes();
  }
  // Bytes a full pass over the weights reads (what a GEMV streams).
  size_t WeightBytes() const { return num_panels * PanelBytes(); }
  bool empty() const { return num_panels == 0; }
};

namespace detail {

// Multiplies with overflow detection.
inline bool MulOverflows(size_t a, size_t b, size_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

// Reads sub-block `blk` (32 values along K) of row r as unsigned codes u and
// the parameters of its group, in the unified form described above.
struct SubBlockCodes {
  uint8_t u[kQuantBlock] = {};
  f16_t d = 0;
  f16_t m = 0;
};

inline void ReadSubBlock(const QuantizedWeights& w, size_t r, size_t blk,
                         SubBlockCodes* out) {
  const size_t blocks_per_row = w.cols / kQuantBlock;
  out->m = 0;
  switch (w.format) {
    case WeightFormat::kQ4_0:
    case WeightFormat::kQ4_1: {
      const uint8_t* qs;
      if (w.format == WeightFormat::kQ4_0) {
        const BlockQ4_0& b =
            static_cast<const BlockQ4_0*>(w.codes)[r * blocks_per_row + blk];
        qs = b.qs;
        out->d = b.d;
      } else {
        const BlockQ4_1& b =
            static_cast<const BlockQ4_1*>(w.codes)[r * blocks_per_row + blk];
        qs = b.qs;
        out->d = b.d;
        out->m = b.m;
      }
      for (size_t j = 0; j < 16; ++j) {
        out->u[j] = qs[j] & 15;
        out->u[j + 16] = qs[j] >> 4;
      }
      return;
    }
    case WeightFormat::kQ8_0: {
      const BlockQ8_0& b =
          static_cast<const BlockQ8_0*>(w.codes)[r * blocks_per_row + blk];
      out->d = b.d;
      for (size_t j = 0; j < kQuantBlock; ++j) {
        out->u[j] = static_cast<uint8_t>(b.qs[j]) ^ 0x80;
      }
      return;
    }
    case WeightFormat::kInt4Sym:
    case WeightFormat::kInt4Asym: {
      const size_t groups_per_row = w.cols / w.group_size;
      const size_t g = blk * kQuantBlock / w.group_size;
      const uint8_t* codes = static_cast<const uint8_t*>(w.codes) +
                             (r * w.cols + blk * kQuantBlock) / 2;
      for (size_t j = 0; j < kQuantBlock; ++j) {
        out->u[j] = (codes[j / 2] >> ((j & 1) * 4)) & 15;
      }
      out->d = static_cast<const f16_t*>(w.scales)[r * groups_per_row + g];
      if (w.format == WeightFormat::kInt4Asym) {
        out->m = static_cast<const f16_t*>(w.mins)[r * groups_per_row + g];
      }
      return;
    }
    case WeightFormat::kInt8PerChannel: {
      const int8_t* codes =
          static_cast<const int8_t*>(w.codes) + r * w.cols + blk * kQuantBlock;
      for (size_t j = 0; j < kQuantBlock; ++j) {
        out->u[j] = static_cast<uint8_t>(codes[j]) ^ 0x80;
      }
      out->d = F16FromF32(1.0f);
      return;
    }
  }
}

}  // namespace detail

// Checks that `w` describes a matrix qkern can multiply with.
inline Status ValidateWeights(const QuantizedWeights& w) {
  if (!IsKnownFormat(w.format)) {
    return MakeStatus(StatusCode::kUnsupported, "unknown weight format %u",
                      static_cast<unsigned>(w.format));
  }
  const WeightFormatInfo& info = FormatInfo(w.format);
  if (w.rows == 0 || w.cols == 0) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s weights: empty matrix (%zu x %zu)", info.name, w.rows,
                      w.cols);
  }
  if (w.cols % kQuantBlock != 0) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s weights: K = %zu is not a multiple of the block size %zu",
                      info.name, w.cols, kQuantBlock);
  }
  const size_t group = w.EffectiveGroupSize();
  if (group == 0 || group % kQuantBlock != 0 || w.cols % group != 0) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "%s weights: group size %zu must be a positive multiple of "
                      "%zu that divides K = %zu",
                      info.name, group, kQuantBlock, w.cols);
  }
  size_t elements;
  if (detail::MulOverflows(w.rows, w.cols, &elements) ||
      elements > (size_t{1} << 48)) {
    return MakeStatus(StatusCode::kOutOfRange,
                      "%s weights: %zu x %zu elements is too large", info.name,
                      w.rows, w.cols);
  }
  if (w.codes == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument, "%s weights: codes is null",
                      info.name);
  }
  if (!info.is_gguf_block && w.scales == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument, "%s weights: scales is null",
                      info.name);
  }
  if (info.has_min && !info.is_gguf_block && w.mins == nullptr) {
    return MakeStatus(StatusCode::kInvalidArgument, "%s weights: mins is null",
                      info.name);
  }
  return Status::Ok();
}

// Packs the rows of parts[0], then parts[1], ... as one matrix, into panels
// of `panel_rows` rows in `layout` (use PackStackedWeightsForCurrentTarget(),
// which picks both for the running CPU). Stacking lets a
// decoder multiply q, k and v (or gate and up) in one call; every part must
// have the same format, group size and K. Runs once at load, in parallel over
// panels on `runner` (null: the calling thread); allocates out->storage. The
// sources may be released (or unmapped) afterwards: nothing in `out` points
// into them.
inline Status PackStackedWeights(const QuantizedWeights* parts,
                                 size_t num_parts, size_t panel_rows,
                                 PanelLayout layout, PackedWeights* out,
                                 const ParallelRunner* runner = nullptr) {
  if (parts == nullptr || num_parts == 0) {
    return MakeStatus(StatusCode::kInvalidArgument, "no weights to pack");
  }
  size_t total_rows = 0;
  for (size_t i = 0; i < num_parts; ++i) {
    QKERN_RETURN_IF_ERROR(ValidateWeights(parts[i]));
    if (parts[i].format != parts[0].format || parts[i].cols != parts[0].cols ||
        parts[i].EffectiveGroupSize() != parts[0].EffectiveGroupSize() ||
        (num_parts > 1 && FormatInfo(parts[0].format).per_channel)) {
      return MakeStatus(StatusCode::kInvalidArgument,
                        "stacked weights: part %zu (%s, K = %zu) does not match "
                        "part 0 (%s, K = %zu), or the format is per-channel",
                        i, FormatInfo(parts[i].format).name, parts[i].cols,
                        FormatInfo(parts[0].format).name, parts[0].cols);
    }
    total_rows += parts[i].rows;
  }
  const QuantizedWeights& w = parts[0];
  if (panel_rows == 0 || panel_rows % 4 != 0 || panel_rows > 4096) {
    return MakeStatus(StatusCode::kInvalidArgument,
                      "panel_rows = %zu must be a positive multiple of 4 (<= 4096)",
                      panel_rows);
  }
  if (layout != PanelLayout::kQuad4 && layout != PanelLayout::kMmla8) {
    return MakeStatus(StatusCode::kInvalidArgument, "unknown panel layout %u",
                      static_cast<unsigned>(layout));
  }
  const WeightFormatInfo& info = FormatInfo(w.format);
  PackedWeights& p = *out;
  p.storage.Free();
  p.format = w.format;
  p.rows = total_rows;
  p.cols = w.cols;
  p.bits = info.bits;
  p.group_size = w.EffectiveGroupSize();
  p.has_min = info.has_min;
  p.sym_offset = info.bits == 4 ? 8 : 128;
  p.panel_rows = panel_rows;
  p.layout = layout;
  p.num_panels = (total_rows + panel_rows - 1) / panel_rows;
  const size_t padded_rows = p.num_panels * panel_rows;
  size_t panel_bytes_total;
  if (detail::MulOverflows(p.num_panels, p.PanelBytes(), &panel_bytes_total)) {
    return MakeStatus(StatusCode::kOutOfRange, "packed size overflows");
  }
  const size_t scale_bytes = info.per_channel ? padded_rows * sizeof(float) : 0;
  if (!p.storage.Allocate(panel_bytes_total + scale_bytes)) {
    return MakeStatus(StatusCode::kResourceExhausted,
                      "cannot allocate %zu bytes for packed %s weights",
                      panel_bytes_total + scale_bytes, info.name);
  }
  p.row_scales = nullptr;
  if (info.per_channel) {
    float* scales = reinterpret_cast<float*>(p.storage.data() + panel_bytes_total);
    memset(scales, 0, scale_bytes);
    memcpy(scales, w.scales, w.rows * sizeof(float));
    p.row_scales = scales;
  }

  // Stacked row -> (part, row in part), without a search per row.
  std::vector<uint32_t> part_of_row(total_rows);
  std::vector<size_t> part_begin(num_parts);
  for (size_t i = 0, row = 0; i < num_parts; ++i) {
    part_begin[i] = row;
    for (size_t r = 0; r < parts[i].rows; ++r) {
      part_of_row[row++] = static_cast<uint32_t>(i);
    }
  }

  const size_t R = panel_rows;
  const size_t W = PanelRunBytes(layout);
  const size_t subs_per_group = p.group_size / kQuantBlock;
  const size_t groups = w.cols / p.group_size;
  // Each task packs whole panels (and first-touches their pages).
  const size_t panels_per_task = 4;
  const size_t num_tasks = (p.num_panels + panels_per_task - 1) / panels_per_task;
  ParallelFor(runner, num_tasks, [&](size_t task, size_t) {
    detail::SubBlockCodes sb;
    const size_t first = task * panels_per_task;
    const size_t last = first + panels_per_task < p.num_panels
                            ? first + panels_per_task : p.num_panels;
    for (size_t panel = first; panel < last; ++panel) {
      uint8_t* base = p.storage.data() + panel * p.PanelBytes();
      memset(base, 0, p.PanelBytes());  // padding rows stay zero
      for (size_t g = 0; g < groups; ++g) {
        uint8_t* group_base = base + g * p.GroupBytes();
        f16_t* d_out = reinterpret_cast<f16_t*>(
            group_base + subs_per_group * p.SubBlockBytes());
        f16_t* m_out = d_out + R;
        for (size_t s = 0; s < subs_per_group; ++s) {
          uint8_t* codes = group_base + s * p.SubBlockBytes();
          for (size_t r = 0; r < R; ++r) {
            const size_t row = panel * R + r;
            if (row >= total_rows) break;
            const uint32_t part = part_of_row[row];
            detail::ReadSubBlock(parts[part], row - part_begin[part],
                                 g * subs_per_group + s, &sb);
            if (s == 0) {
              memcpy(&d_out[r], &sb.d, sizeof(f16_t));
              if (p.has_min) memcpy(&m_out[r], &sb.m, sizeof(f16_t));
            }
            if (p.bits == 8) {
              for (size_t q = 0; q < kQuantBlock / W; ++q) {
                memcpy(codes + q * W * R + W * r, sb.u + W * q, W);
              }
            } else {
              for (size_t q = 0; q < kQuantBlock / 2 / W; ++q) {
                for (size_t j = 0; j < W; ++j) {
                  codes[q * W * R + W * r + j] = static_cast<uint8_t>(
                      sb.u[W * q + j] | (sb.u[16 + W * q + j] << 4));
                }
              }
            }
          }
        }
      }
    }
  });
  return Status::Ok();
}

// The 4-byte-quad layout (what every target but Arm i8mm reads).
inline Status PackStackedWeights(const QuantizedWeights* parts,
                                 size_t num_parts, size_t panel_rows,
                                 PackedWeights* out,
                                 const ParallelRunner* runner = nullptr) {
  return PackStackedWeights(parts, num_parts, panel_rows, PanelLayout::kQuad4,
                            out, runner);
}

// Packs one matrix; see PackStackedWeights.
inline Status PackWeights(const QuantizedWeights& w, size_t panel_rows,
                          PanelLayout layout, PackedWeights* out,
                          const ParallelRunner* runner = nullptr) {
  return PackStackedWeights(&w, 1, panel_rows, layout, out, runner);
}
inline Status PackWeights(const QuantizedWeights& w, size_t panel_rows,
                          PackedWeights* out,
                          const ParallelRunner* runner = nullptr) {
  return PackStackedWeights(&w, 1, panel_rows, PanelLayout::kQuad4, out,
                            runner);
}

}  // namespace qkern

#endif  // QKERN_QUANT_PACKED_WEIGHTS_H_
