// Decode GEMV for Q8 / Q4 weights repacked at load for AVX512-VNNI (as llama.cpp's Q4_0x8 layouts):
// 16 weight rows interleaved 4 bytes at a time, so that one 64-byte load holds the same 4 bytes (8
// inputs of Q4, 4 of Q8) of 16 rows, one per int32 lane. VPDPBUSD multiplies them with 4 activation
// bytes broadcast to every lane, so each lane sums one row: no horizontal sums, and one activation
// scale per block of 128 inputs is applied once per (16 rows, token, block) instead of per 64-byte chunk
// and row. The row-major kernel (vnni_gemv.h) spends about as many vector ops on scales and offsets as
// on dot products; this one spends about 1/16 of them.
//
// Packed layout (Matrix::layout == MatrixLayout::Vnni16), for a Q8/Q4 matrix of `rows` × `cols`:
//   data:   [ceil(rows/16) blocks][U units][16 rows][4 bytes], U = row_bytes / 4; the stored bytes are
//           unsigned: Q4 nibbles q + 8 (byte ^ 0x88, even input still in the high nibble), Q8 q + 128
//           (byte ^ 0x80). Rows past `rows` in the last block are zero bytes with zero scales.
//   scales: [blocks][groups][16 rows] fp16 bits.
// It needs cols % 8 == 0 (Q4) or cols % 4 == 0 (Q8), and a group size that is a multiple of 128, one
// group per row, or a divisor of 128 that holds whole units (packable()). Matrix::at and unpack_rows
// read it back exactly.
#pragma once
#include <cstdint>
#include <vector>

#include "util/matrix.h"
#include "util/large_pages.h"

namespace glmlab::vnni {

// A Q8/Q4 matrix in the packed layout and the storage it owns.
struct PackedMatrix {
  Matrix m;
  WeightBytes data, scales;
};

// True when W (row-major Q8/Q4) can be packed (shape and group size above) and the CPU runs the kernel.
bool packable(const Matrix& W);
// The packed copy of a row-major Q8/Q4 matrix (threaded). Precondition: packable(W).
PackedMatrix pack(const Matrix& W);
// Rows [r0, r1) of a packed matrix back in the row-major layout: data [r1 − r0, row_bytes] and fp16
// scales [r1 − r0, groups] (exactly the bytes pack() read).
void unpack_rows(const Matrix& P, int64_t r0, int64_t r1, uint8_t* data, uint16_t* scales);

// Activation rows quantized for a packed matrix: int8 in blocks of `block` inputs (128, or the group
// size where that is smaller), scale max|x|/127, round half to even.
struct PackedActs {
  DType wtype = DType::Q8;
  int nt = 0;
  int64_t units = 0, block = 0, blocks = 0;
  std::vector<int8_t> q;       // [nt, units, 8 (Q4: 4 even inputs, 4 odd inputs) or 4 (Q8)]
  std::vector<float> scale;    // [nt, blocks]
  std::vector<int32_t> corr;   // [nt, blocks] offset · Σ q over the block (offset 8 for Q4, 128 for Q8)
};
void quantize_acts(const float* x, int nt, const Matrix& P, PackedActs& out);

// y[t·ys + r] = Σ_i x[t, i] · P[r, i] for rows [r0, r1) and tokens t < a.nt. r0 is a multiple of 16;
// r1 is a multiple of 16 or P.rows. Up to 8 tokens share one pass over the weights; more pass in groups
// of 8 over blocks of rows that stay in L2, so the weights are read from memory once per call.
void gemv(const Matrix& P, int64_t r0, int64_t r1, const PackedActs& a, float* y, int64_t ys);

}  // namespace glmlab::vnni
