// W4A16 linear on x86 CPUs with AVX-512 BF16: y[c, N] = x[c, K] (bf16) @ dequant(W)[N, K]^T, reading the
// compressed-tensors int4 weights as loaded (`weight_packed [N, K/8]` int32, `weight_scale [N, K/g]` bf16),
// so no repacked copy is kept.
//
// The trick that makes it exact and cheap: a nibble n OR 0x4300 is the bf16 number 128 + n. The weights go
// into `_mm512_dpbf16_ps` as 128 + n against x, and per group we subtract 136 * sum(x over the group)
// (precomputed once per call) before multiplying by the group's scale: (128 + n - 136) = (n - 8).
//
// The K axis is walked in chunks of 64 elements (32 bytes of one row). `vpmovzxbw` puts byte j of a chunk in
// 16-bit lane j, so the low nibbles hold elements 0, 2, ..., 62 and the high nibbles 1, 3, ..., 63; x is
// permuted into that order once per call ("xperm") instead of shuffling every weight load. Within a chunk,
// lanes 0..7 of the dot-product accumulator cover elements 0..31 and lanes 8..15 elements 32..63, which lie
// in one group each (group size >= 32), so one per-lane scale vector applies each group's scale.
//
// Three kernels, picked by token count in `w4a16_linear` (the crossover is measured per CPU):
//   dot   (few tokens, any AVX-512 BF16 CPU): the dot products above, up to 4 tokens per weight load.
//   amx   (more tokens, CPUs with AMX-BF16): 16x32 weight tiles dequantized by table lookup, AMX products.
//   tile  (more tokens, no AMX): 32-row blocks dequantized once into a thread-local buffer, then an
//         AVX-512 BF16 GEMM over all the tokens.
// All parallelize over N with at::parallel_for (OpenMP: built with -fopenmp). `moe_w4a16` runs a whole MoE layer
// through them.

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>
#include <torch/extension.h>

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <utility>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int kChunk = 64;  // K elements per chunk: 32 bytes of packed nibbles
// The dot kernel's rows per pass over x and how far ahead it prefetches. Two rows, eight ahead, beat four
// rows one block ahead (2 threads, K = 7168 / 2048 / 1408: one token 16.7 -> 20.2, 17.9 -> 20.0,
// 16.3 -> 19.2 GB/s; two tokens +3-7%): fewer interleaved streams and a longer lead on DRAM latency.
constexpr int kRowsPerLoad = 2;
constexpr int kPrefetchRows = 8;
// Both kernels prefetch rows ahead of the ones they compute; prefetches never fault, so running past the end
// of the tensor is harmless.

#define W4A16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

bool cpu_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bf16");
}

inline float bf16_bits_to_float(uint16_t bits) {
  uint32_t u = uint32_t(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// One chunk's packed bytes (32, or 16 for a K that ends on a half chunk) as 16-bit lanes.
W4A16_TARGET inline __m512i load_chunk(const uint8_t* p, bool half) {
  __m256i bytes = half ? _mm256_maskz_loadu_epi8(0xFFFFu, p) : _mm256_loadu_si256((const __m256i*)p);
  return _mm512_cvtepu8_epi16(bytes);
}

// Scales of a chunk's two halves as fp32 lanes [8 x first half, 8 x second half].
W4A16_TARGET inline __m512 chunk_scales(const uint16_t* row_scale, int64_t chunk, int group_size, bool half) {
  if (group_size == 32 && !half) {
    // The two bf16 scales as one dword in every lane; a byte shuffle moves scale 0 (bytes 0-1) into the top
    // half of dwords 0..7 and scale 1 (bytes 2-3) into the top half of dwords 8..15, zeroing the bottom.
    const __m512i pick = _mm512_set_epi32(0x03028080, 0x03028080, 0x03028080, 0x03028080, 0x03028080, 0x03028080,
                                          0x03028080, 0x03028080, 0x01008080, 0x01008080, 0x01008080, 0x01008080,
                                          0x01008080, 0x01008080, 0x01008080, 0x01008080);
    int32_t pair;
    std::memcpy(&pair, row_scale + 2 * chunk, 4);
    return _mm512_castsi512_ps(_mm512_shuffle_epi8(_mm512_set1_epi32(pair), pick));
  }
  uint32_t pair;
  if (group_size == 32) {
    pair = row_scale[2 * chunk];
  } else {
    uint32_t s = row_scale[chunk * kChunk / group_size];
    pair = s | s << 16;
  }
  // Odd 16-bit lanes take the scale's bits (word 0 for dwords 0..7, word 1 for 8..15), even lanes are zero:
  // each dword is then the fp32 value of the bf16 scale.
  const __m512i pick = _mm512_set_epi16(1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0,  //
                                        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAAu, pick, _mm512_set1_epi32(int(pair))));
}

// Rows [n, n + R) times tokens [t, t + T) of the permuted x; writes fp32 dot products to out[r * T + i].
template <int T, int R>
W4A16_TARGET void dot_rows(const uint8_t* w, int64_t w_stride, const uint16_t* scale, int64_t scale_stride,
                           int group_size, const uint16_t* xperm, const float* xcorr, int64_t k_padded,
                           int64_t chunks, bool half_tail, float* out) {
  const __m512i low_mask = _mm512_set1_epi16(0x000F);
  const __m512i bf16_128 = _mm512_set1_epi16(0x4300);
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < T; ++i) acc[r][i] = _mm512_setzero_ps();

  for (int64_t c = 0; c < chunks; ++c) {
    const bool half = half_tail && c == chunks - 1;
    __m512bh x_lo[T], x_hi[T];
    for (int i = 0; i < T; ++i) {
      const uint16_t* xp = xperm + i * k_padded + c * kChunk;
      x_lo[i] = (__m512bh)_mm512_loadu_si512(xp);
      x_hi[i] = (__m512bh)_mm512_loadu_si512(xp + 32);
    }
    // Rows are contiguous, so the block of R rows kPrefetchRows ahead is one sequential stretch: fetch it
    // as one stream, a chunk's share at a time, while this block computes (the hardware prefetcher does
    // poorly on R interleaved short streams; measured 6.6 -> 8.5 GB/s for one token at K = 7168). Into L2,
    // not L1: L1 prefetches hold the few line-fill buffers the loads need (one token, 2 threads: 12.7 ->
    // 15.9 GB/s at K = 2048, 16.9 -> 17.7 at K = 7168).
    for (int64_t off = c * R * (kChunk / 2); off < (c + 1) * R * (kChunk / 2); off += 64)
      _mm_prefetch((const char*)(w + kPrefetchRows * w_stride + off), _MM_HINT_T1);
    for (int r = 0; r < R; ++r) {
      const __m512i v = load_chunk(w + r * w_stride + c * (kChunk / 2), half);
      const __m512bh lo = (__m512bh)_mm512_ternarylogic_epi32(v, low_mask, bf16_128, 0xEA);  // (v & 0xF) | 0x4300
      const __m512bh hi = (__m512bh)_mm512_or_si512(_mm512_srli_epi16(v, 4), bf16_128);
      const __m512 s = chunk_scales(scale + r * scale_stride, c, group_size, half);
      for (int i = 0; i < T; ++i) {
        __m512 g = _mm512_loadu_ps(xcorr + (i * chunks + c) * 16);  // -136 * sum(x) / 8 per lane
        g = _mm512_dpbf16_ps(g, lo, x_lo[i]);
        g = _mm512_dpbf16_ps(g, hi, x_hi[i]);
        acc[r][i] = _mm512_fmadd_ps(g, s, acc[r][i]);
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < T; ++i) out[r * T + i] = _mm512_reduce_add_ps(acc[r][i]);
}

using DotFn = void (*)(const uint8_t*, int64_t, const uint16_t*, int64_t, int, const uint16_t*, const float*,
                       int64_t, int64_t, bool, float*);

template <int T>
DotFn dot_fn(bool one_row) {
  return one_row ? &dot_rows<T, 1> : &dot_rows<T, kRowsPerLoad>;
}

DotFn pick_dot(int tokens, bool one_row) {
  switch (tokens) {
    case 1: return dot_fn<1>(one_row);
    case 2: return dot_fn<2>(one_row);
    case 3: return dot_fn<3>(one_row);
    default: return dot_fn<4>(one_row);
  }
}

constexpr int kMaxTokensPerLoad = 4;

// x [c, K] bf16 -> xperm [c, K padded to 64] in the nibble-lane order, and per chunk half the bias
// correction -136 * sum(x) / 8 spread over the 8 lanes that hold that half.
W4A16_TARGET void permute_x(const at::Tensor& x, at::Tensor& xperm, at::Tensor& xcorr) {
  const int64_t c = x.size(0), k = x.size(1), k_padded = xperm.size(1), chunks = k_padded / kChunk;
  const uint16_t* xs = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  uint16_t* xp = reinterpret_cast<uint16_t*>(xperm.data_ptr<at::BFloat16>());
  float* corr = xcorr.data_ptr<float>();
  alignas(64) int16_t order[2][32];
  for (int p = 0; p < 32; ++p) order[0][p] = int16_t(2 * p), order[1][p] = int16_t(2 * p + 1);
  const __m512i evens = _mm512_load_si512(order[0]), odds = _mm512_load_si512(order[1]);
  for (int64_t t = 0; t < c; ++t) {
    for (int64_t ch = 0; ch < chunks; ++ch) {
      float sums[2] = {0.f, 0.f};
      uint16_t* out = xp + t * k_padded + ch * kChunk;
      if ((ch + 1) * kChunk <= k) {
        const __m512i v[2] = {_mm512_loadu_si512(xs + t * k + ch * kChunk),
                              _mm512_loadu_si512(xs + t * k + ch * kChunk + 32)};
        _mm512_storeu_si512(out, _mm512_permutex2var_epi16(v[0], evens, v[1]));
        _mm512_storeu_si512(out + 32, _mm512_permutex2var_epi16(v[0], odds, v[1]));
        for (int h = 0; h < 2; ++h) {
          const __m512 a = _mm512_cvtpbh_ps((__m256bh)_mm512_castsi512_si256(v[h]));
          const __m512 b = _mm512_cvtpbh_ps((__m256bh)_mm512_extracti64x4_epi64(v[h], 1));
          sums[h] = _mm512_reduce_add_ps(_mm512_add_ps(a, b));
        }
      } else {
        for (int j = 0; j < 32; ++j) {
          for (int odd = 0; odd < 2; ++odd) {
            const int64_t kk = ch * kChunk + 2 * j + odd;
            const uint16_t bits = kk < k ? xs[t * k + kk] : 0;
            out[32 * odd + j] = bits;
            sums[j >= 16] += bf16_bits_to_float(bits);
          }
        }
      }
      for (int lane = 0; lane < 16; ++lane) corr[(t * chunks + ch) * 16 + lane] = -17.f * sums[lane >= 8];
    }
  }
}

void check_args(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale, int64_t group_size) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.is_contiguous(), "x must be contiguous bf16 [c, K]");
  TORCH_CHECK(packed.dim() == 2 && packed.scalar_type() == at::kInt && packed.is_contiguous(),
              "weight_packed must be contiguous int32 [N, K/8]");
  TORCH_CHECK(scale.dim() == 2 && scale.scalar_type() == at::kBFloat16 && scale.is_contiguous(),
              "weight_scale must be contiguous bf16 [N, K/group]");
  TORCH_CHECK(group_size == 32 || group_size == 64 || group_size == 128, "group size must be 32, 64 or 128");
  const int64_t k = packed.size(1) * 8;
  TORCH_CHECK(x.size(1) == k, "x has K=", x.size(1), " but the weights have K=", k);
  TORCH_CHECK(k % group_size == 0 && scale.size(0) == packed.size(0) && scale.size(1) == k / group_size,
              "weight_scale does not match weight_packed and the group size");
  TORCH_CHECK(cpu_supported(), "this CPU lacks AVX-512 BF16");
}

// One dot-kernel product in flight: x permuted once (xperm, xcorr, kept alive here) and where y goes.
struct DotJob {
  at::Tensor xperm, xcorr, y;
  const uint8_t* w;
  const uint16_t* s;
  int64_t c, n, w_stride, s_stride, k_padded, chunks;
  int group_size;
  bool half_tail;
};

// Threads split N in blocks of 4 rows; within a block each token block uses its own rows per load.
constexpr int kDotBlock = 4;

DotJob dot_job(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale, int64_t group_size) {
  check_args(x, packed, scale, group_size);
  const int64_t c = x.size(0), k = x.size(1), k_padded = (k + kChunk - 1) / kChunk * kChunk;
  DotJob job;
  job.xperm = at::empty({c, k_padded}, x.options());
  job.xcorr = at::empty({c, k_padded / kChunk, 16}, x.options().dtype(at::kFloat));
  permute_x(x, job.xperm, job.xcorr);
  job.y = at::empty({c, packed.size(0)}, x.options());
  job.w = reinterpret_cast<const uint8_t*>(packed.data_ptr<int32_t>());
  job.s = reinterpret_cast<const uint16_t*>(scale.data_ptr<at::BFloat16>());
  job.c = c;
  job.n = packed.size(0);
  job.w_stride = k / 2;
  job.s_stride = k / group_size;
  job.k_padded = k_padded;
  job.chunks = k_padded / kChunk;
  job.group_size = int(group_size);
  job.half_tail = k % kChunk != 0;
  return job;
}

// Rows [block * 4, block * 4 + 4) of the job, all its tokens.
void dot_block(const DotJob& job, int64_t block) {
  const uint16_t* xp = reinterpret_cast<const uint16_t*>(job.xperm.data_ptr<at::BFloat16>());
  const float* corr = job.xcorr.data_ptr<float>();
  at::BFloat16* yp = job.y.data_ptr<at::BFloat16>();
  const int64_t n = job.n, row0 = block * kDotBlock, row_end = std::min<int64_t>(row0 + kDotBlock, n);
  float out[kMaxTokensPerLoad * kDotBlock];
  for (int64_t t0 = 0; t0 < job.c; t0 += kMaxTokensPerLoad) {
    const int tt = int(std::min<int64_t>(kMaxTokensPerLoad, job.c - t0));
    for (int64_t r = row0; r < row_end;) {
      const int rows = r + kRowsPerLoad <= row_end ? kRowsPerLoad : 1;
      pick_dot(tt, rows == 1)(job.w + r * job.w_stride, job.w_stride, job.s + r * job.s_stride, job.s_stride,
                              job.group_size, xp + t0 * job.k_padded, corr + t0 * job.chunks * 16, job.k_padded,
                              job.chunks, job.half_tail, out);
      for (int ri = 0; ri < rows; ++ri)
        for (int i = 0; i < tt; ++i) yp[(t0 + i) * n + r + ri] = at::BFloat16(out[ri * tt + i]);
      r += rows;
    }
  }
}

int64_t dot_blocks(const DotJob& job) { return (job.n + kDotBlock - 1) / kDotBlock; }

// Few tokens on any AVX-512 BF16 CPU: the dot-product kernel, parallel over rows.
at::Tensor w4a16_dot(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale, int64_t group_size) {
  const DotJob job = dot_job(x, packed, scale, group_size);
  at::parallel_for(0, dot_blocks(job), 16, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) dot_block(job, b);
  });
  return job.y;
}

// Several dot-kernel products in one parallel loop over all their row blocks (one fork-join, not one each).
void run_dot_jobs(const std::vector<DotJob>& jobs) {
  std::vector<int64_t> first{0};  // first[j]: the job's first block in the joint range
  for (const DotJob& job : jobs) first.push_back(first.back() + dot_blocks(job));
  at::parallel_for(0, first.back(), 16, [&](int64_t begin, int64_t end) {
    size_t j = std::upper_bound(first.begin(), first.end(), begin) - first.begin() - 1;
    for (int64_t b = begin; b < end; ++b) {
      while (b >= first[j + 1]) ++j;
      dot_block(jobs[j], b - first[j]);
    }
  });
}

// r[i] = row i of a 16x16 dword matrix -> r[d] = column d.
W4A16_TARGET inline void transpose16(__m512i r[16]) {
  __m512i t0[16], t1[16];
  for (int i = 0; i < 16; i += 2) {
    t0[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t0[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // t1[4g + j], 128-bit lane L: dword 4L + j of rows 4g..4g+3.
  for (int i = 0; i < 16; i += 4) {
    t1[i] = _mm512_unpacklo_epi64(t0[i], t0[i + 2]);
    t1[i + 1] = _mm512_unpackhi_epi64(t0[i], t0[i + 2]);
    t1[i + 2] = _mm512_unpacklo_epi64(t0[i + 1], t0[i + 3]);
    t1[i + 3] = _mm512_unpackhi_epi64(t0[i + 1], t0[i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i a = _mm512_shuffle_i32x4(t1[j], t1[4 + j], 0x44), b = _mm512_shuffle_i32x4(t1[8 + j], t1[12 + j], 0x44);
    const __m512i c = _mm512_shuffle_i32x4(t1[j], t1[4 + j], 0xEE), d = _mm512_shuffle_i32x4(t1[8 + j], t1[12 + j], 0xEE);
    r[j] = _mm512_shuffle_i32x4(a, b, 0x88);
    r[4 + j] = _mm512_shuffle_i32x4(a, b, 0xDD);
    r[8 + j] = _mm512_shuffle_i32x4(c, d, 0x88);
    r[12 + j] = _mm512_shuffle_i32x4(c, d, 0xDD);
  }
}

// ---- Many tokens without AMX: a dequantized weight tile in a thread-local buffer, then AVX-512 BF16 GEMM ----
//
// Each thread takes blocks of 32 weight rows. A block is dequantized once, over all of K, into a reused
// thread-local buffer in the layout `vdpbf16ps` wants when output rows are the vector lanes: per 16-row half
// and per K pair, one 64-byte vector of the 16 rows' (bf16, bf16) pairs. Then all the call's tokens run
// against it, 12 at a time: per pair, two weight vectors, each token's x pair broadcast, 24 dot products
// into fp32 accumulators held over all of K. Rows being lanes, a token's 16 outputs are contiguous in y and
// any token count fills the vectors. The weights are rounded to bf16, as the bf16 baseline's dequantized
// weights are, and pairs run in natural K order, so x is read as it is.

constexpr int kTileRows = 32;    // rows per block: two vectors of 16
constexpr int kTileTokens = 12;  // tokens per micro-kernel pass: 24 accumulators

// Rows [row0, row0 + rows) (rows <= 16; missing rows are zero) of all K dequantized into
// buf [K / 2 pairs][16 rows] dwords, natural K order: each lane one row's (k, k + 1) bf16 pair.
//
// 16 rows' packed words are loaded 16 at a time and transposed, so a vector holds one word (8 nibbles) of
// each row; pair q of the word is nibbles 2q and 2q + 1, moved to bits 0-3 and 16-19 and OR-ed with 0x4300
// in both halves: the bf16 pair (128 + n0, 128 + n1). Two dot products against (scale, 0) and (0, scale),
// started at -136 * scale, give (n - 8) * scale for each element in fp32 (exact), rounded to bf16 like the
// bf16 baseline's weights, and one permute interleaves them back into pairs. `scales` is [groups][16] of the
// rows' bf16 scale bits (zero-extended), built by the caller.
W4A16_TARGET void tile_dequant16(const uint8_t* w, int64_t w_stride, int rows, int64_t k, int group_size,
                                 const uint32_t* scales, uint32_t* buf) {
  const int64_t words = k / 8, steps = (words + 15) / 16;
  const __m512i sel_lo = _mm512_set1_epi32(0x0000FFFF), nib = _mm512_set1_epi32(0x000F000F);
  const __m512i bf16_128 = _mm512_set1_epi32(0x43004300);
  const __m512 minus136 = _mm512_set1_ps(-136.f);
  alignas(64) int16_t order[32];
  for (int r = 0; r < 16; ++r) order[2 * r] = int16_t(r), order[2 * r + 1] = int16_t(16 + r);
  const __m512i interleave = _mm512_load_si512(order);
  for (int64_t st = 0; st < steps; ++st) {
    const int64_t live = std::min<int64_t>(16, words - st * 16);
    const __mmask16 mask = live >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << live) - 1);
    __m512i t[16];
    // The next 16 rows' line of this step, into L2 (the rows are 16 streams; see the dot kernel).
    for (int r = 0; r < 16; ++r) _mm_prefetch((const char*)(w + (16 + r) * w_stride + st * 64), _MM_HINT_T1);
    for (int r = 0; r < 16; ++r)
      t[r] = r < rows ? _mm512_maskz_loadu_epi32(mask, w + r * w_stride + st * 64) : _mm512_setzero_si512();
    transpose16(t);
    for (int j = 0; j < live; ++j) {
      const int64_t word = st * 16 + j, group = word * 8 / group_size;
      const __m512i even = _mm512_loadu_si512(scales + group * 16);  // (scale, 0) per row
      const __m512i odd = _mm512_slli_epi32(even, 16);                // (0, scale)
      const __m512 start = _mm512_mul_ps(_mm512_castsi512_ps(odd), minus136);
      for (int q = 0; q < 4; ++q) {
        const __m512i lo = _mm512_srli_epi32(t[j], 8 * q);
        const __m512i hi = q < 2 ? _mm512_slli_epi32(t[j], 12 - 8 * q) : _mm512_srli_epi32(t[j], 8 * q - 12);
        const __m512i both = _mm512_ternarylogic_epi32(lo, hi, sel_lo, 0xE4);  // low half lo, high half hi
        const __m512bh pair = (__m512bh)_mm512_ternarylogic_epi32(both, nib, bf16_128, 0xEA);
        const __m512 e = _mm512_dpbf16_ps(start, pair, (__m512bh)even);
        const __m512 o = _mm512_dpbf16_ps(start, pair, (__m512bh)odd);
        _mm512_storeu_si512(buf + (word * 4 + q) * 16,
                           _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(o, e)));
      }
    }
  }
}

// scales [N, groups] bf16 rows [row0, row0 + rows) -> out [groups][16] zero-extended bits (zero past rows).
W4A16_TARGET void tile_scales16(const uint16_t* scale, int64_t groups, int rows, uint32_t* out) {
  for (int64_t g0 = 0; g0 < groups; g0 += 32) {
    const int64_t live = std::min<int64_t>(32, groups - g0);
    const __mmask32 mask = live >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1u << live) - 1);
    __m512i v[16];
    for (int r = 0; r < 16; ++r)
      v[r] = r < rows ? _mm512_maskz_loadu_epi16(mask, scale + r * groups + g0) : _mm512_setzero_si512();
    transpose16(v);  // v[d] = dword d (groups g0 + 2d, g0 + 2d + 1) of every row
    const __m512i low = _mm512_set1_epi32(0xFFFF);
    for (int d = 0; d < 16 && 2 * d < live; ++d) {
      _mm512_storeu_si512(out + (g0 + 2 * d) * 16, _mm512_and_si512(v[d], low));
      if (2 * d + 1 < live) _mm512_storeu_si512(out + (g0 + 2 * d + 1) * 16, _mm512_srli_epi32(v[d], 16));
    }
  }
}

// y[t0 + i, row0 + 16 r + lane] for T tokens and R halves of a block: x32 is xperm as dword pairs.
template <int T, int R>
W4A16_TARGET void tile_gemm(const uint32_t* buf, int64_t pairs, const uint32_t* x32, int64_t x_pairs, int rows,
                            at::BFloat16* y, int64_t n) {
  __m512 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int i = 0; i < T; ++i) acc[r][i] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh wv[R];
    for (int r = 0; r < R; ++r) wv[r] = (__m512bh)_mm512_loadu_si512(buf + (r * pairs + p) * 16);
    for (int i = 0; i < T; ++i) {
      const __m512bh xb = (__m512bh)_mm512_set1_epi32(int(x32[i * x_pairs + p]));
      for (int r = 0; r < R; ++r) acc[r][i] = _mm512_dpbf16_ps(acc[r][i], wv[r], xb);
    }
  }
  for (int r = 0; r < R; ++r) {
    const int live = std::min(16, rows - 16 * r);
    const __mmask16 mask = live >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << live) - 1);
    for (int i = 0; i < T; ++i)
      _mm256_mask_storeu_epi16(y + i * n + 16 * r, mask, (__m256i)_mm512_cvtneps_pbh(acc[r][i]));
  }
}

using TileGemmFn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, int, at::BFloat16*, int64_t);

template <int R, int... T>
constexpr std::array<TileGemmFn, sizeof...(T)> tile_gemm_table(std::integer_sequence<int, T...>) {
  return {&tile_gemm<T + 1, R>...};
}

TileGemmFn pick_tile_gemm(int tokens, int halves) {
  static constexpr auto one = tile_gemm_table<1>(std::make_integer_sequence<int, kTileTokens>{});
  static constexpr auto two = tile_gemm_table<2>(std::make_integer_sequence<int, kTileTokens>{});
  return (halves == 1 ? one : two)[tokens - 1];
}

at::Tensor w4a16_tile(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale, int64_t group_size) {
  check_args(x, packed, scale, group_size);
  const int64_t c = x.size(0), n = packed.size(0), k = x.size(1), groups = k / group_size;
  const uint8_t* w = reinterpret_cast<const uint8_t*>(packed.data_ptr<int32_t>());
  const uint16_t* s = reinterpret_cast<const uint16_t*>(scale.data_ptr<at::BFloat16>());
  const uint32_t* x32 = reinterpret_cast<const uint32_t*>(x.data_ptr<at::BFloat16>());
  const int64_t pairs = k / 2, w_stride = k / 2;
  at::Tensor y = at::empty({c, n}, x.options());
  at::BFloat16* yp = y.data_ptr<at::BFloat16>();
  at::parallel_for(0, (n + kTileRows - 1) / kTileRows, 1, [&](int64_t begin, int64_t end) {
    // Reused across calls: one block of all K (32 rows x K bf16: 448 KiB at K = 7168) and its scales.
    static thread_local std::vector<uint32_t> storage;
    const int64_t groups_padded = (groups + 31) / 32 * 32;
    const size_t need = size_t(kTileRows) * pairs + 16 * groups_padded + 16;
    if (storage.size() < need) storage.assign(need, 0);
    uint32_t* buf = reinterpret_cast<uint32_t*>((reinterpret_cast<uintptr_t>(storage.data()) + 63) & ~uintptr_t(63));
    uint32_t* scales = buf + kTileRows * pairs;
    for (int64_t block = begin; block < end; ++block) {
      const int64_t row0 = block * kTileRows;
      const int rows = int(std::min<int64_t>(kTileRows, n - row0));
      const int halves = rows > 16 ? 2 : 1;
      for (int h = 0; h < halves; ++h) {
        const int live = std::min(16, rows - 16 * h);
        tile_scales16(s + (row0 + 16 * h) * groups, groups, live, scales);
        tile_dequant16(w + (row0 + 16 * h) * w_stride, w_stride, live, k, int(group_size), scales, buf + h * pairs * 16);
      }
      for (int64_t t0 = 0; t0 < c; t0 += kTileTokens) {
        const int tokens = int(std::min<int64_t>(kTileTokens, c - t0));
        pick_tile_gemm(tokens, halves)(buf, pairs, x32 + t0 * pairs, pairs, rows, yp + t0 * n + row0, n);
      }
    }
  });
  return y;
}

// ---- AMX: tiles of 16 weight rows x 32 K elements times 16 tokens ----
//
// Each 32-element step of 16 weight rows is dequantized to bf16 by table lookup into an A tile: the 16
// values (n - 8) * scale of the row's group are computed once (fp32, rounded to bf16 like the bf16
// baseline's dequantized weights) and `vpermw` picks them by nibble. The B tile holds x in AMX's
// pair-interleaved layout, C accumulates over all of K; up to 4 token tiles share each dequantized A tile.
//
// Nibble order in an A row: the step's 16 bytes are broadcast to the 4 128-bit lanes; 16-bit word m of lane
// L, shifted right by 4L, has in its low 4 bits element 4m + L (vpermw reads only those bits of a
// 16-entry table stored twice). x is packed in the same order.

#define W4A16_AMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,amx-tile,amx-bf16")))

constexpr int kTile = 16;        // weight rows per A tile, tokens per B tile
constexpr int kStep = 32;        // K elements per tile product
constexpr int kTokenTiles = 4;   // C tiles (token tiles) per pass over the weights

bool amx_supported() {
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!cpu_supported() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
    // Linux hands out the tile state only on request (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA).
    return amx_bf16 && amx_tile && syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return ok;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Position p of an A row (and of a B step) holds element amx_order(p) of the 32-element step.
constexpr int amx_order(int p) { return 4 * (p % 8) + p / 8; }

// A C tile (16 rows x 16 tokens, fp32) -> y[t0 + i, row0 + r] in bf16, for r < rows, i < tokens.
W4A16_AMX inline void store_c_tile(const float* c, int rows, int64_t tokens, at::BFloat16* y, int64_t n) {
  __m512i r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_load_si512(c + i * kTile);
  transpose16(r);
  const __mmask16 mask = __mmask16((1u << rows) - 1);
  for (int64_t i = 0; i < tokens; ++i)
    _mm256_mask_storeu_epi16(y + i * n, mask, (__m256i)_mm512_cvtneps_pbh(_mm512_castsi512_ps(r[i])));
}

// x [c, K] -> B tiles [token tiles, K / 32, 16 pairs, 16 tokens, 2], zero past c: per token and step, the
// 32 values in A-row order, their 16 pairs down the token's column of the B tile.
W4A16_AMX void pack_x_amx(const at::Tensor& x, at::Tensor& xb) {
  const int64_t c = x.size(0), k = x.size(1), steps = xb.size(1);
  const uint16_t* xs = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  int32_t* b = reinterpret_cast<int32_t*>(xb.data_ptr<at::BFloat16>());  // one pair per int32
  alignas(64) int16_t order[kStep];
  for (int p = 0; p < kStep; ++p) order[p] = int16_t(amx_order(p));
  const __m512i a_order = _mm512_load_si512(order);
  const int64_t tiles = xb.size(0);
  // Per token tile and step: 16 tokens' 16 pairs (rows of a 16x16 dword matrix) transposed into the B tile.
  for (int64_t tile = 0; tile < tiles; ++tile) {
    for (int64_t st = 0; st < steps; ++st) {
      __m512i r[16];
      for (int i = 0; i < 16; ++i) {
        const int64_t t = tile * kTile + i;
        r[i] = t < c ? _mm512_permutexvar_epi16(a_order, _mm512_loadu_si512(xs + t * k + st * kStep))
                     : _mm512_setzero_si512();
      }
      transpose16(r);
      int32_t* out = b + (tile * steps + st) * (kStep / 2) * kTile;
      for (int d = 0; d < 16; ++d) _mm512_store_si512(out + d * kTile, r[d]);
    }
  }
}

// One step of `rows` weight rows (zeros after them) dequantized to bf16 into abuf [16 rows][32].
W4A16_AMX inline void dequant_step(const uint8_t* w, int64_t w_stride, int rows, const float* scales,
                                   int64_t groups, int64_t group, int64_t step, uint16_t* abuf) {
  const __m512 levels = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i shifts = _mm512_set_epi16(12, 12, 12, 12, 12, 12, 12, 12, 8, 8, 8, 8, 8, 8, 8, 8,  //
                                          4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0);
  // The next 16 rows, sequentially into L2, a step's share at a time (see the dot kernel).
  for (int off = 0; off < kTile * 16; off += 64)
    _mm_prefetch((const char*)(w + kTile * w_stride + step * kTile * 16 + off), _MM_HINT_T1);
  for (int r = 0; r < kTile; ++r) {
    if (r >= rows) {
      _mm512_store_si512(abuf + r * kStep, _mm512_setzero_si512());
      continue;
    }
    const __m512 values = _mm512_mul_ps(levels, _mm512_set1_ps(scales[r * groups + group]));
    const __m512i table = (__m512i)_mm512_cvtne2ps_pbh(values, values);
    const __m512i bytes = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(w + r * w_stride + step * 16)));
    _mm512_store_si512(abuf + r * kStep, _mm512_permutexvar_epi16(_mm512_srlv_epi16(bytes, shifts), table));
  }
}

// `rows` (<= 16) weight rows times 1..4 token tiles -> out [token tile][16 rows][16 tokens] fp32.
// Tiles: C = tmm0..3 (one per token tile), A = tmm4, B = tmm5..7.
W4A16_AMX void amx_rows(const uint8_t* w, int64_t w_stride, int rows, int64_t steps, int group_size,
                        const float* scales, int64_t groups, const uint16_t* xb, int64_t xb_tile, int token_tiles,
                        uint16_t* abuf, float* out) {
  constexpr int stride = 64;  // bytes per tile row
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t st = 0; st < steps; ++st) {
    uint16_t* a = abuf + (st & 1) * kTile * kStep;  // two buffers: the next step's stores need not wait
    dequant_step(w, w_stride, rows, scales, groups, st * kStep / group_size, st, a);
    const uint16_t* b = xb + st * kStep * kTile;
    _tile_loadd(4, a, stride);
    _tile_loadd(5, b, stride);
    _tile_dpbf16ps(0, 4, 5);
    if (token_tiles > 1) {
      _tile_loadd(6, b + xb_tile, stride);
      _tile_dpbf16ps(1, 4, 6);
    }
    if (token_tiles > 2) {
      _tile_loadd(7, b + 2 * xb_tile, stride);
      _tile_dpbf16ps(2, 4, 7);
    }
    if (token_tiles > 3) {
      _tile_loadd(5, b + 3 * xb_tile, stride);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  _tile_stored(0, out, stride);
  if (token_tiles > 1) _tile_stored(1, out + kTile * kTile, stride);
  if (token_tiles > 2) _tile_stored(2, out + 2 * kTile * kTile, stride);
  if (token_tiles > 3) _tile_stored(3, out + 3 * kTile * kTile, stride);
}

W4A16_AMX void amx_configure() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = kTile * 4;
    config.rows[t] = kTile;
  }
  // Not _tile_loadconfig: GCC 12's version tells the compiler it reads 8 bytes, so the rest of the
  // config may never be stored.
  asm volatile("ldtilecfg %0" ::"m"(config));
}

W4A16_AMX void amx_release() { _tile_release(); }

W4A16_AMX void scales_to_float(const uint16_t* scale, int64_t count, float* out) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16)
    _mm512_storeu_ps(out + i, _mm512_cvtpbh_ps((__m256bh)_mm256_loadu_si256((const __m256i*)(scale + i))));
  for (; i < count; ++i) out[i] = bf16_bits_to_float(scale[i]);
}

at::Tensor w4a16_amx(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale, int64_t group_size) {
  check_args(x, packed, scale, group_size);
  TORCH_CHECK(amx_supported(), "this CPU (or kernel) does not offer AMX-BF16");
  const int64_t c = x.size(0), n = packed.size(0), k = x.size(1);
  const int64_t token_tiles = (c + kTile - 1) / kTile, steps = k / kStep, groups = k / group_size;
  at::Tensor xb = at::empty({token_tiles, steps, kStep / 2, kTile, 2}, x.options());
  pack_x_amx(x, xb);
  const uint8_t* w = reinterpret_cast<const uint8_t*>(packed.data_ptr<int32_t>());
  const uint16_t* s = reinterpret_cast<const uint16_t*>(scale.data_ptr<at::BFloat16>());
  const uint16_t* xbp = reinterpret_cast<const uint16_t*>(xb.data_ptr<at::BFloat16>());
  const int64_t xb_tile = steps * kStep * kTile;
  at::Tensor y = at::empty({c, n}, x.options());
  at::BFloat16* yp = y.data_ptr<at::BFloat16>();
  const int64_t w_stride = k / 2;
  // Passes of up to kTokenTiles token tiles, each over all the rows: a pass's x tiles (64 tokens x K, 0.9 MB at
  // K = 7168) stay in L2 while the weights stream past. Rows outside and passes inside re-read every pass's
  // x from L3 for every 16 rows: at 256 tokens (K = 7168, 2 threads) 15.4 ms instead of 9.7 for bf16.
  for (int64_t tile0 = 0; tile0 < token_tiles; tile0 += kTokenTiles) {
    const int tiles = int(std::min<int64_t>(kTokenTiles, token_tiles - tile0));
    at::parallel_for(0, (n + kTile - 1) / kTile, 4, [&](int64_t begin, int64_t end) {
      std::vector<float> row_scales(kTile * groups);
      alignas(64) uint16_t abuf[2 * kTile * kStep];
      alignas(64) float out[kTokenTiles * kTile * kTile];
      amx_configure();
      for (int64_t block = begin; block < end; ++block) {
        const int64_t row0 = block * kTile;
        const int rows = int(std::min<int64_t>(kTile, n - row0));
        scales_to_float(s + row0 * groups, rows * groups, row_scales.data());
        amx_rows(w + row0 * w_stride, w_stride, rows, steps, int(group_size), row_scales.data(), groups,
                 xbp + tile0 * xb_tile, xb_tile, tiles, abuf, out);
        for (int tt = 0; tt < tiles; ++tt) {
          const int64_t t0 = (tile0 + tt) * kTile, tokens = std::min<int64_t>(kTile, c - t0);
          store_c_tile(out + tt * kTile * kTile, rows, tokens, yp + t0 * n + row0, n);
        }
      }
      amx_release();
    });
  }
  return y;
}

// y [c, N] bf16 = x [c, K] bf16 @ dequant(packed, scale)^T: the dot kernel below many_min_tokens tokens, from
// there AMX tiles where the CPU has them, else the dequantized-tile GEMM. The crossover is measured per CPU
// (`inference.kernels.cpu.many_token_crossover`; on Sapphire Rapids, 2 threads, K = 7168 the dot kernel led up
// to two tokens: 15.9 GB/s of int4 weights vs AMX's 12.9, three 12.8 vs 13.1).
at::Tensor w4a16_linear(const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scale, int64_t group_size,
                        int64_t many_min_tokens) {
  if (x.size(0) < many_min_tokens) return w4a16_dot(x, packed, scale, group_size);
  if (amx_supported()) return w4a16_amx(x, packed, scale, group_size);
  return w4a16_tile(x, packed, scale, group_size);
}

// out[h] += w * row[h] (bf16 row, fp32 out).
W4A16_TARGET void add_weighted_row(const uint16_t* row, float w, int64_t h, float* out) {
  const __m512 wv = _mm512_set1_ps(w);
  int64_t j = 0;
  for (; j + 16 <= h; j += 16) {
    const __m512 v = _mm512_cvtpbh_ps((__m256bh)_mm256_loadu_si256((const __m256i*)(row + j)));
    _mm512_storeu_ps(out + j, _mm512_fmadd_ps(v, wv, _mm512_loadu_ps(out + j)));
  }
  for (; j < h; ++j) out[j] += w * bf16_bits_to_float(row[j]);
}

// out[tokens[i]] += weights[i] * y[i] for the rows of y [c, H], which go to distinct tokens.
void add_weighted_rows(const at::Tensor& y, const int64_t* tokens, const float* weights, float* out) {
  const int64_t c = y.size(0), h = y.size(1);
  const uint16_t* yp = reinterpret_cast<const uint16_t*>(y.data_ptr<at::BFloat16>());
  at::parallel_for(0, c, std::max<int64_t>(1, (1 << 14) / h), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) add_weighted_row(yp + i * h, weights[i], h, out + tokens[i] * h);
  });
}

// The routed-expert MoE on int4 experts in one call: tokens grouped by expert, gate+up, SiLU-and-mul, down,
// and the routing-weighted sum in fp32 -> [M, H] float32. Slicing and grouping from Python cost ~10 us an
// op, a sixth of a decode step's MoE time on Moonlight-sized experts; here they cost next to nothing.
// w13 stacks gate rows [0, I) and up rows [I, 2I).
at::Tensor moe_w4a16(const at::Tensor& x, const at::Tensor& w13_packed, const at::Tensor& w13_scale,
                     int64_t w13_group, const at::Tensor& w2_packed, const at::Tensor& w2_scale, int64_t w2_group,
                     const at::Tensor& topk_ids, const at::Tensor& topk_weights, int64_t many_min_tokens) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kBFloat16 && x.is_contiguous(), "x must be contiguous bf16 [M, H]");
  TORCH_CHECK(w13_packed.dim() == 3 && w2_packed.dim() == 3 && w13_packed.size(0) == w2_packed.size(0),
              "expert weights must be [E, N, K/8] with the same E");
  const int64_t m = x.size(0), h = x.size(1), experts = w13_packed.size(0), inter = w2_packed.size(2) * 8;
  TORCH_CHECK(w13_packed.size(1) == 2 * inter && w2_packed.size(1) == h && w13_packed.size(2) * 8 == h,
              "w13 must be [E, 2I, H/8] and w2 [E, H, I/8] for H=", h);
  TORCH_CHECK(topk_ids.dim() == 2 && topk_ids.sizes() == topk_weights.sizes() && topk_ids.size(0) == m,
              "topk_ids and topk_weights must be [M, k]");
  const at::Tensor ids = topk_ids.to(at::kLong).contiguous();
  const at::Tensor wts = topk_weights.to(at::kFloat).contiguous();
  const int64_t* id = ids.data_ptr<int64_t>();
  const float* wt = wts.data_ptr<float>();
  std::vector<std::vector<int64_t>> tokens(experts);
  std::vector<std::vector<float>> weights(experts);
  for (int64_t i = 0; i < ids.numel(); ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < experts, "expert id ", id[i], " is outside [0, ", experts, ")");
    tokens[id[i]].push_back(i / ids.size(1));
    weights[id[i]].push_back(wt[i]);
  }
  at::Tensor out = at::zeros({m, h}, x.options().dtype(at::kFloat));
  int64_t most = 0;
  for (int64_t e = 0; e < experts; ++e) most = std::max<int64_t>(most, int64_t(tokens[e].size()));
  if (most < many_min_tokens) {
    // Every expert on the dot kernel (decode): each projection of all experts in one parallel loop, so a
    // layer costs two fork-joins instead of two per expert.
    std::vector<int64_t> active;
    std::vector<DotJob> up, down;
    for (int64_t e = 0; e < experts; ++e) {
      const int64_t c = int64_t(tokens[e].size());
      if (c == 0) continue;
      const at::Tensor xe = c == 1 ? x.narrow(0, tokens[e][0], 1)
                                   : x.index_select(0, at::from_blob(tokens[e].data(), {c}, at::kLong));
      active.push_back(e);
      up.push_back(dot_job(xe, w13_packed[e], w13_scale[e], w13_group));
    }
    run_dot_jobs(up);
    for (size_t j = 0; j < active.size(); ++j) {
      const at::Tensor& gate_up = up[j].y;
      const at::Tensor a = at::silu(gate_up.narrow(1, 0, inter)).mul_(gate_up.narrow(1, inter, inter));
      down.push_back(dot_job(a, w2_packed[active[j]], w2_scale[active[j]], w2_group));
    }
    run_dot_jobs(down);
    for (size_t j = 0; j < active.size(); ++j)
      add_weighted_rows(down[j].y, tokens[active[j]].data(), weights[active[j]].data(), out.data_ptr<float>());
    return out;
  }
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t c = int64_t(tokens[e].size());
    if (c == 0) continue;
    const at::Tensor xe = c == 1 ? x.narrow(0, tokens[e][0], 1)
                                 : x.index_select(0, at::from_blob(tokens[e].data(), {c}, at::kLong));
    const at::Tensor gate_up = w4a16_linear(xe, w13_packed[e], w13_scale[e], w13_group, many_min_tokens);
    const at::Tensor a = at::silu(gate_up.narrow(1, 0, inter)).mul_(gate_up.narrow(1, inter, inter));
    const at::Tensor y = w4a16_linear(a, w2_packed[e], w2_scale[e], w2_group, many_min_tokens);
    add_weighted_rows(y, tokens[e].data(), weights[e].data(), out.data_ptr<float>());
  }
  return out;
}

// The whole [N, K] bf16 weight (for tests and callers that want dense weights), by the tile kernel's
// dequantization: blocks of 16 rows in [pairs][16 rows] order, transposed back by torch.
at::Tensor w4a16_dequantize(const at::Tensor& packed, const at::Tensor& scale, int64_t group_size) {
  const int64_t n = packed.size(0), k = packed.size(1) * 8, groups = k / group_size, blocks = (n + 15) / 16;
  check_args(at::empty({0, k}, scale.options()), packed, scale, group_size);
  at::Tensor buf = at::empty({blocks, k / 2, 16, 2}, scale.options());
  const uint8_t* w = reinterpret_cast<const uint8_t*>(packed.data_ptr<int32_t>());
  const uint16_t* s = reinterpret_cast<const uint16_t*>(scale.data_ptr<at::BFloat16>());
  uint32_t* bp = reinterpret_cast<uint32_t*>(buf.data_ptr<at::BFloat16>());
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> scales(16 * ((groups + 31) / 32 * 32));
    for (int64_t b = begin; b < end; ++b) {
      const int rows = int(std::min<int64_t>(16, n - 16 * b));
      tile_scales16(s + 16 * b * groups, groups, rows, scales.data());
      tile_dequant16(w + 16 * b * (k / 2), k / 2, rows, k, int(group_size), scales.data(), bp + b * (k / 2) * 16);
    }
  });
  return buf.permute({0, 2, 1, 3}).reshape({blocks * 16, k}).narrow(0, 0, n).contiguous();
}

// The threads at::parallel_for gives the kernels: torch's thread count when built with OpenMP, one without.
int64_t parallel_threads() {
  std::atomic<int64_t> most{0};
  at::parallel_for(0, 1 << 10, 1, [&](int64_t, int64_t) {
    const int64_t id = at::get_thread_num() + 1;
    int64_t seen = most.load();
    while (id > seen && !most.compare_exchange_weak(seen, id)) {
    }
  });
  return most.load();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cpu_supported", &cpu_supported, "whether this CPU has the AVX-512 BF16 instructions the kernel needs");
  m.def("amx_supported", &amx_supported, "whether this CPU and kernel offer AMX-BF16 tiles");
  m.def("w4a16_amx", &w4a16_amx, "y[c, N] = x[c, K] @ dequant(int4 W)[N, K]^T (bf16) with AMX tiles");
  m.def("w4a16_linear", &w4a16_linear, "y[c, N] = x[c, K] @ dequant(int4 W)[N, K]^T (bf16), kernel chosen by c");
  m.def("moe_w4a16", &moe_w4a16, "routed-expert MoE on int4 experts (gate+up, SiLU-and-mul, down, weighted sum)");
  m.def("w4a16_dot", &w4a16_dot, "the dot-product kernel (few tokens)");
  m.def("w4a16_tile", &w4a16_tile, "a dequantized tile per 32 rows through an AVX-512 BF16 GEMM (many tokens, no AMX)");
  m.def("parallel_threads", &parallel_threads, "threads the kernels' parallel loops run on");
  m.def("w4a16_dequantize", &w4a16_dequantize, "int4 [N, K/8] + bf16 scales -> bf16 [N, K]");
}
