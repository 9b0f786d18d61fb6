// A whole Llama forward pass in one native call, on GGUF weights kept quantized (Q4_0, Q4_1, Q8_0), for x86
// CPUs with AVX-512 VNNI. `QuantLlama.forward` runs every layer of a set of rows (one token each: the B
// tokens of a decode step, or the T tokens of a prefill chunk, or both) inside one OpenMP parallel region:
// RMSNorm, the fused QKV projection, rotary, the paged KV-cache write, attention over the cache, the output
// projection, RMSNorm, gate+up with SiLU-and-mul, down, and the LM head for the rows that want logits.
//
// Matmuls: activations are quantized per block of 32 to int8 twice: x ~ d * (256 * q1 + q2) with d = amax / 127 / 256,
// q2 quantizing what q1 missed (one int8 level, as llama.cpp's Q8 activation blocks, flips greedy tokens of
// SmolLM2: its activations have outlier channels that leave the rest of a block a few levels; two levels are
// within float rounding of float32 activations). Each output is sum over blocks of
// d_w * d * (256 * sum_i(w_i * q1_i) + sum_i(w_i * q2_i))  +  b_w * a_x, the integer part from two `vpdpbusd`
// (u8 x s8, 64 products per instruction) and a shift, in int32.
//   Q4_1 (w = d*q + m, q in 0..15) and Q4_0 (w = d*(q - 8), i.e. m = -8d): q is the u8 operand, x the s8 one;
//   b_w = m, a_x = d * (256 * sum(q1) + sum(q2)) over the block.
//   Q8_0 (w = d*q, q in -128..127): q_l + 128 is the u8 operand, q the s8 one; b_w = -128 * d * sum(q),
//   a_x = 257 * d (the offsets of both levels).
// Weights are repacked once at load. 4-bit rows: per 64-element span, byte j holds element j in its low nibble
// and element j + 32 in its high nibble, so a 32-byte load unpacks (and, shift) into 64 bytes in element order;
// lanes 0..7 of the dot product then cover one block and lanes 8..15 the next, and one per-lane scale vector
// applies both blocks' scales. 8-bit rows keep their bytes as they are.
//
// Every output element is computed by the same instructions whatever the batch holds and whichever thread
// computes it, so a sequence's tokens do not depend on what else is batched with it.

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <immintrin.h>
#include <omp.h>
#include <torch/extension.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int kBlock = 32;
constexpr int kSpan = 64;
constexpr int kTokTile = 4;   // activation rows per pass over a weight row
constexpr int kRowChunk = 16; // weight rows per scheduling chunk

enum Kind : int { Q4 = 0, Q8 = 1 };

bool cpu_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");
}

inline float half_to_float(uint16_t h) { return c10::detail::fp16_ieee_to_fp32_value(h); }

// ---- repacking GGUF blocks ------------------------------------------------------------------------------

struct Repacked {
  at::Tensor qs, d, b;
};

void check_raw(const at::Tensor& raw, int64_t k, int64_t block_bytes) {
  TORCH_CHECK(raw.dtype() == at::kByte && raw.dim() == 2 && raw.is_contiguous(), "raw blocks must be uint8 [N, bytes]");
  TORCH_CHECK(k % kSpan == 0, "K = ", k, " must be a multiple of 64");
  TORCH_CHECK(raw.size(1) == k / kBlock * block_bytes, "raw row has ", raw.size(1), " bytes, expected ",
              k / kBlock * block_bytes);
}

// ggml's 4-bit blocks hold element i (i < 16) in the low nibble of qs[i] and element i + 16 in its high nibble.
std::vector<at::Tensor> repack_q4(const at::Tensor& raw, int64_t k, bool with_min) {
  const int64_t bb = with_min ? 20 : 18;
  check_raw(raw, k, bb);
  const int64_t n = raw.size(0), nb = k / kBlock;
  auto qs = at::empty({n, k / 2}, at::kByte);
  auto d = at::empty({n, nb}, at::kFloat);
  auto b = at::empty({n, nb}, at::kFloat);
  const uint8_t* src = raw.data_ptr<uint8_t>();
  uint8_t* q = qs.data_ptr<uint8_t>();
  float* dp = d.data_ptr<float>();
  float* bp = b.data_ptr<float>();
  at::parallel_for(0, n, 64, [&](int64_t lo, int64_t hi) {
    std::vector<uint8_t> vals(k);
    for (int64_t r = lo; r < hi; ++r) {
      const uint8_t* row = src + r * nb * bb;
      for (int64_t g = 0; g < nb; ++g) {
        const uint8_t* blk = row + g * bb;
        uint16_t dh, mh = 0;
        std::memcpy(&dh, blk, 2);
        if (with_min) std::memcpy(&mh, blk + 2, 2);
        const float dv = half_to_float(dh);
        dp[r * nb + g] = dv;
        bp[r * nb + g] = with_min ? half_to_float(mh) : -8.0f * dv;
        const uint8_t* nib = blk + (with_min ? 4 : 2);
        for (int i = 0; i < 16; ++i) {
          vals[g * kBlock + i] = nib[i] & 0x0F;
          vals[g * kBlock + i + 16] = nib[i] >> 4;
        }
      }
      uint8_t* out = q + r * (k / 2);
      for (int64_t s = 0; s < k / kSpan; ++s)
        for (int j = 0; j < 32; ++j)
          out[s * 32 + j] = uint8_t(vals[s * kSpan + j] | (vals[s * kSpan + j + 32] << 4));
    }
  });
  return {qs, d, b};
}

std::vector<at::Tensor> repack_q8_0(const at::Tensor& raw, int64_t k) {
  check_raw(raw, k, 34);
  const int64_t n = raw.size(0), nb = k / kBlock;
  auto qs = at::empty({n, k}, at::kChar);
  auto d = at::empty({n, nb}, at::kFloat);
  auto b = at::empty({n, nb}, at::kFloat);
  const uint8_t* src = raw.data_ptr<uint8_t>();
  int8_t* q = qs.data_ptr<int8_t>();
  float* dp = d.data_ptr<float>();
  float* bp = b.data_ptr<float>();
  at::parallel_for(0, n, 256, [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      for (int64_t g = 0; g < nb; ++g) {
        const uint8_t* blk = src + (r * nb + g) * 34;
        uint16_t dh;
        std::memcpy(&dh, blk, 2);
        const float dv = half_to_float(dh);
        int sum = 0;
        for (int i = 0; i < kBlock; ++i) {
          const int8_t v = int8_t(blk[2 + i]);
          q[r * k + g * kBlock + i] = v;
          sum += v;
        }
        dp[r * nb + g] = dv;
        bp[r * nb + g] = -128.0f * dv * float(sum);
      }
  });
  return {qs, d, b};
}

// The dequantized weights of a repacked matrix (float32 [N, K]): for tests and for embedding rows.
at::Tensor dequantize(int64_t kind, const at::Tensor& qs, const at::Tensor& d, const at::Tensor& b, int64_t k) {
  const int64_t n = d.size(0), nb = k / kBlock;
  auto out = at::empty({n, k}, at::kFloat);
  float* o = out.data_ptr<float>();
  const float* dp = d.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  const uint8_t* q = static_cast<const uint8_t*>(qs.data_ptr());
  for (int64_t r = 0; r < n; ++r)
    for (int64_t e = 0; e < k; ++e) {
      const int64_t g = e / kBlock;
      if (kind == Q8) {
        o[r * k + e] = dp[r * nb + g] * float(int8_t(q[r * k + e]));
      } else {
        const int64_t s = e / kSpan, j = e % kSpan;
        const uint8_t byte = q[r * (k / 2) + s * 32 + (j % 32)];
        const int v = j < 32 ? (byte & 0x0F) : (byte >> 4);
        o[r * k + e] = dp[r * nb + g] * float(v) + bp[r * nb + g];
      }
    }
  return out;
}

}  // namespace

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")

namespace {

struct QMat {
  int kind = Q4;
  int64_t n = 0, k = 0;
  at::Tensor qs, d, b;  // kept alive here; the pointers below read them
  const uint8_t* q = nullptr;
  const float* dp = nullptr;
  const float* bp = nullptr;
  int64_t row_bytes() const { return kind == Q8 ? k : k / 2; }
};

QMat make_qmat(int64_t kind, int64_t k, const at::Tensor& qs, const at::Tensor& d, const at::Tensor& b) {
  QMat m;
  m.kind = int(kind);
  m.k = k;
  m.n = d.size(0);
  TORCH_CHECK(k % kSpan == 0, "K must be a multiple of 64");
  TORCH_CHECK(d.dtype() == at::kFloat && b.dtype() == at::kFloat && d.size(1) == k / kBlock, "bad scales");
  TORCH_CHECK(qs.is_contiguous() && d.is_contiguous() && b.is_contiguous(), "repacked tensors must be contiguous");
  TORCH_CHECK(qs.size(0) == m.n && qs.size(1) == m.row_bytes() && qs.element_size() == 1, "bad packed weights");
  m.qs = qs;
  m.d = d;
  m.b = b;
  m.q = static_cast<const uint8_t*>(qs.data_ptr());
  m.dp = d.data_ptr<float>();
  m.bp = b.data_ptr<float>();
  return m;
}

// One activation row quantized for both weight kinds.
struct QAct {
  int8_t* xq;     // [2][K] s8, levels 1 and 2 (Q4 weights' partner)
  uint8_t* xu;    // [2][K] xq + 128 as u8 (Q8 weights' partner)
  float* dxv;     // [K/64][16] per-lane activation scales d
  float* sx;      // [K/32] d * (256 * sum(q1) + sum(q2)): Q4's bias activation
  float* dx;      // [K/32] 257 * d: Q8's bias activation
};

struct ActBuf {
  int64_t rows = 0, k = 0;
  std::vector<int8_t> xq;
  std::vector<uint8_t> xu;
  std::vector<float> dxv, sx, dx;
  void resize(int64_t r, int64_t kk) {
    rows = r;
    k = kk;
    xq.resize(2 * r * kk);
    xu.resize(2 * r * kk);
    dxv.resize(2 * r * (kk / kSpan) * 16);
    sx.resize(r * (kk / kBlock));
    dx.resize(r * (kk / kBlock));
  }
  QAct row(int64_t i) {
    return {xq.data() + 2 * i * k, xu.data() + 2 * i * k, dxv.data() + 2 * i * (k / kSpan) * 16,
            sx.data() + i * (k / kBlock), dx.data() + i * (k / kBlock)};
  }
};

inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

// One int8 level of a block of 32 (v0, v1: its two halves) with step d: stores q at xq/xu, returns sum(q), and
// leaves v0, v1 holding what the level missed.
inline int quantize_level(__m512& v0, __m512& v1, float d, int8_t* xq, uint8_t* xu) {
  const float inv = d > 0 ? 1.0f / d : 0.0f;
  const __m512i lim = _mm512_set1_epi32(127);
  const __m512i q0 = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, _mm512_set1_ps(inv))), lim),
                                      _mm512_sub_epi32(_mm512_setzero_si512(), lim));
  const __m512i q1 = _mm512_max_epi32(_mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v1, _mm512_set1_ps(inv))), lim),
                                      _mm512_sub_epi32(_mm512_setzero_si512(), lim));
  const __m128i b0 = _mm512_cvtsepi32_epi8(q0);
  const __m128i b1 = _mm512_cvtsepi32_epi8(q1);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(xq), b0);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(xq + 16), b1);
  const __m128i flip = _mm_set1_epi8(char(0x80));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(xu), _mm_xor_si128(b0, flip));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(xu + 16), _mm_xor_si128(b1, flip));
  v0 = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(q0), _mm512_set1_ps(d), v0);
  v1 = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(q1), _mm512_set1_ps(d), v1);
  return _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
}

void quantize_row(const float* x, int64_t k, QAct a) {
  const int64_t nb = k / kBlock;
  float dd[2];
  for (int64_t g = 0; g < nb; ++g) {
    __m512 v0 = _mm512_loadu_ps(x + g * kBlock);
    __m512 v1 = _mm512_loadu_ps(x + g * kBlock + 16);
    const float amax = std::max(_mm512_reduce_max_ps(_mm512_abs_ps(v0)), _mm512_reduce_max_ps(_mm512_abs_ps(v1)));
    // level 1's residual is at most d1 / 2, so |q2| <= 128 (saturated to 127 at the very edge: an error of d)
    const float d1 = amax / 127.0f, d = d1 / 256.0f;
    const int s1 = quantize_level(v0, v1, d1, a.xq + g * kBlock, a.xu + g * kBlock);
    const int s2 = quantize_level(v0, v1, d, a.xq + k + g * kBlock, a.xu + k + g * kBlock);
    a.dx[g] = 257.0f * d;
    a.sx[g] = d * float(256 * s1 + s2);
    dd[g % 2] = d;
    if (g % 2 == 1)
      _mm512_storeu_ps(a.dxv + (g / 2) * 16,
                       _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(dd[0]), _mm512_set1_ps(dd[1])));
  }
}

inline __m512i load_w(const QMat& w, const uint8_t* row, int64_t s) {
  if (w.kind == Q8) return _mm512_loadu_si512(row + s * kSpan);
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + s * 32));
  const __m256i m = _mm256_set1_epi8(0x0F);
  const __m256i lo = _mm256_and_si256(v, m);
  const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// out[t] = row n of W . activation t, for t < T (T <= kTokTile).
template <int T>
inline void row_dot(const QMat& w, int64_t n, const QAct* acts, float* out) {
  const int64_t spans = w.k / kSpan, nb = w.k / kBlock;
  const uint8_t* row = w.q + n * w.row_bytes();
  const float* dw = w.dp + n * nb;
  const float* bw = w.bp + n * nb;
  __m512 acc[T];
  for (int t = 0; t < T; ++t) acc[t] = _mm512_setzero_ps();
  const bool q8 = w.kind == Q8;
  for (int64_t s = 0; s < spans; ++s) {
    const __m512i wv = load_w(w, row, s);
    const __m512 dws = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(dw[2 * s]), _mm512_set1_ps(dw[2 * s + 1]));
    for (int t = 0; t < T; ++t) {
      __m512i dot;
      if (q8) {
        const __m512i x1 = _mm512_loadu_si512(acts[t].xu + s * kSpan);
        const __m512i x2 = _mm512_loadu_si512(acts[t].xu + w.k + s * kSpan);
        dot = _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), x1, wv), 8);
        dot = _mm512_dpbusd_epi32(dot, x2, wv);
      } else {
        const __m512i x1 = _mm512_loadu_si512(acts[t].xq + s * kSpan);
        const __m512i x2 = _mm512_loadu_si512(acts[t].xq + w.k + s * kSpan);
        dot = _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, x1), 8);
        dot = _mm512_dpbusd_epi32(dot, wv, x2);
      }
      const __m512 scale = _mm512_mul_ps(dws, _mm512_loadu_ps(acts[t].dxv + s * 16));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[t]);
    }
  }
  // The bias term: sum over blocks of b_w * a_x.
  for (int t = 0; t < T; ++t) {
    const float* ax = q8 ? acts[t].dx : acts[t].sx;
    __m512 bacc = _mm512_setzero_ps();
    int64_t g = 0;
    for (; g + 16 <= nb; g += 16) bacc = _mm512_fmadd_ps(_mm512_loadu_ps(bw + g), _mm512_loadu_ps(ax + g), bacc);
    if (g < nb) {
      const __mmask16 m = __mmask16((1u << (nb - g)) - 1);
      bacc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, bw + g), _mm512_maskz_loadu_ps(m, ax + g), bacc);
    }
    out[t] = hsum(acc[t]) + hsum(bacc);
  }
}

// All rows of W against `rows` activations: y[r * ldy + n] (op: 0 store, 1 add). Runs as an omp-for inside the
// caller's parallel region (ends with its barrier).
inline void dot_rows(const QMat& w, int64_t n, const QAct* acts, int64_t r0, int t, float* vals) {
  switch (t) {
    case 1: row_dot<1>(w, n, acts + r0, vals); break;
    case 2: row_dot<2>(w, n, acts + r0, vals); break;
    case 3: row_dot<3>(w, n, acts + r0, vals); break;
    default: row_dot<4>(w, n, acts + r0, vals); break;
  }
}

void matmul(const QMat& w, const QAct* acts, int64_t rows, float* y, int64_t ldy, bool add) {
  const int64_t chunks = (w.n + kRowChunk - 1) / kRowChunk;
#pragma omp for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t n1 = std::min(w.n, (c + 1) * kRowChunk);
    for (int64_t r0 = 0; r0 < rows; r0 += kTokTile) {
      const int t = int(std::min<int64_t>(kTokTile, rows - r0));
      for (int64_t n = c * kRowChunk; n < n1; ++n) {
        float vals[kTokTile];
        dot_rows(w, n, acts, r0, t, vals);
        for (int i = 0; i < t; ++i) {
          float* dst = y + (r0 + i) * ldy + n;
          *dst = add ? *dst + vals[i] : vals[i];
        }
      }
    }
  }
}

// gate rows [0, I) and up rows [I, 2I) of one matrix: act[r * I + n] = silu(gate) * up.
void matmul_swiglu(const QMat& w, const QAct* acts, int64_t rows, float* act) {
  const int64_t inter = w.n / 2;
  const int64_t chunks = (inter + kRowChunk - 1) / kRowChunk;
#pragma omp for schedule(dynamic, 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t n1 = std::min(inter, (c + 1) * kRowChunk);
    for (int64_t r0 = 0; r0 < rows; r0 += kTokTile) {
      const int t = int(std::min<int64_t>(kTokTile, rows - r0));
      for (int64_t n = c * kRowChunk; n < n1; ++n) {
        float g[kTokTile], u[kTokTile];
        dot_rows(w, n, acts, r0, t, g);
        dot_rows(w, n + inter, acts, r0, t, u);
        for (int i = 0; i < t; ++i) act[(r0 + i) * inter + n] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
      }
    }
  }
}

void rmsnorm(const float* x, const float* w, int64_t k, float eps, float* out) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    acc = _mm512_fmadd_ps(v, v, acc);
  }
  const float inv = 1.0f / std::sqrt(hsum(acc) / float(k) + eps);
  for (int64_t i = 0; i < k; i += 16)
    _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), _mm512_set1_ps(inv)),
                                            _mm512_loadu_ps(w + i)));
}

struct Layer {
  at::Tensor attn_norm, ffn_norm;
  QMat qkv, o, gate_up, down;
};

// Load 16 cache values as floats.
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const c10::BFloat16* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}
inline void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void store16(c10::BFloat16* p, __m512 v) {
  // round to nearest even, as torch's float -> bf16 conversion does
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __m512i out = _mm512_mask_mov_epi32(_mm512_srli_epi32(rounded, 16), nan, _mm512_set1_epi32(0x7FC0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(out));
}

class QuantLlama {
 public:
  QuantLlama(int64_t hidden, int64_t inter, int64_t n_heads, int64_t n_kv, int64_t head_dim, double eps,
             at::Tensor cos, at::Tensor sin, at::Tensor final_norm)
      : h_(hidden), i_(inter), nh_(n_heads), nkv_(n_kv), hd_(head_dim), eps_(float(eps)), cos_(cos.contiguous()),
        sin_(sin.contiguous()), final_norm_(final_norm.contiguous().to(at::kFloat)) {
    TORCH_CHECK(head_dim % 32 == 0 && hidden % kSpan == 0 && inter % kSpan == 0, "unsupported shapes");
    TORCH_CHECK(cos_.dtype() == at::kFloat && cos_.size(1) == head_dim / 2, "cos/sin must be float [P, D/2]");
  }

  void add_layer(at::Tensor attn_norm, at::Tensor ffn_norm, std::vector<at::Tensor> qkv, std::vector<at::Tensor> o,
                 std::vector<at::Tensor> gate_up, std::vector<at::Tensor> down, std::vector<int64_t> kinds) {
    Layer l;
    l.attn_norm = attn_norm.contiguous().to(at::kFloat);
    l.ffn_norm = ffn_norm.contiguous().to(at::kFloat);
    l.qkv = make_qmat(kinds[0], h_, qkv[0], qkv[1], qkv[2]);
    l.o = make_qmat(kinds[1], nh_ * hd_, o[0], o[1], o[2]);
    l.gate_up = make_qmat(kinds[2], h_, gate_up[0], gate_up[1], gate_up[2]);
    l.down = make_qmat(kinds[3], i_, down[0], down[1], down[2]);
    TORCH_CHECK(l.qkv.n == (nh_ + 2 * nkv_) * hd_ && l.o.n == h_ && l.gate_up.n == 2 * i_ && l.down.n == h_,
                "layer shapes do not match the config");
    layers_.push_back(std::move(l));
  }

  void set_embeddings(int64_t kind, at::Tensor qs, at::Tensor d, at::Tensor b) { embed_ = make_qmat(kind, h_, qs, d, b); }
  void set_lm_head(int64_t kind, at::Tensor qs, at::Tensor d, at::Tensor b) {
    head_ = make_qmat(kind, h_, qs, d, b);
    has_head_ = true;
  }

  // ids, positions, slots, row_seq: int64 [R]; tables: int64 [S, NB] cache blocks of each sequence;
  // k_cache / v_cache: per layer [num_slots, n_kv, head_dim] (float32 or bfloat16); logit_rows: int64 [L].
  // Writes each row's keys/values at its slot, attends row r to positions 0..positions[r] of its sequence, and
  // returns float32 logits [L, V] of the chosen rows.
  at::Tensor forward(const at::Tensor& ids, const at::Tensor& positions, const at::Tensor& slots,
                     const at::Tensor& row_seq, const at::Tensor& tables, int64_t block_size,
                     const std::vector<at::Tensor>& k_cache, const std::vector<at::Tensor>& v_cache,
                     const at::Tensor& logit_rows, bool profile) {
    TORCH_CHECK(int64_t(k_cache.size()) == int64_t(layers_.size()) && v_cache.size() == k_cache.size(),
                "one k and one v cache per layer");
    const auto dt = k_cache[0].scalar_type();
    TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16, "KV cache must be float32 or bfloat16");
    for (size_t l = 0; l < k_cache.size(); ++l)
      TORCH_CHECK(k_cache[l].scalar_type() == dt && v_cache[l].scalar_type() == dt && k_cache[l].is_contiguous() &&
                      v_cache[l].is_contiguous() && k_cache[l].size(1) == nkv_ && k_cache[l].size(2) == hd_,
                  "KV cache tensors must be contiguous [slots, n_kv, head_dim] of one dtype");
    const int64_t rows = ids.numel();
    TORCH_CHECK(positions.numel() == rows && slots.numel() == rows && row_seq.numel() == rows, "row arrays differ");
    const int64_t num_slots = k_cache[0].size(0);
    const int64_t* pos = positions.data_ptr<int64_t>();
    const int64_t* slot = slots.data_ptr<int64_t>();
    const int64_t* rs = row_seq.data_ptr<int64_t>();
    const int64_t* tab = tables.data_ptr<int64_t>();
    const int64_t nbt = tables.size(1);
    const int64_t* id = ids.data_ptr<int64_t>();
    for (int64_t r = 0; r < rows; ++r) {
      TORCH_CHECK(id[r] >= 0 && id[r] < embed_.n, "token id out of range");
      TORCH_CHECK(pos[r] >= 0 && pos[r] < cos_.size(0) && pos[r] / block_size < nbt, "position out of range");
      TORCH_CHECK(slot[r] >= 0 && slot[r] < num_slots, "slot out of range");
      TORCH_CHECK(rs[r] >= 0 && rs[r] < tables.size(0), "row_seq out of range");
      for (int64_t b = 0; b <= pos[r] / block_size; ++b)
        TORCH_CHECK(tab[rs[r] * nbt + b] >= 0 && (tab[rs[r] * nbt + b] + 1) * block_size <= num_slots,
                    "block table entry out of range");
    }
    const int64_t nl = logit_rows.numel();
    const int64_t* lr = logit_rows.data_ptr<int64_t>();
    for (int64_t i = 0; i < nl; ++i) TORCH_CHECK(lr[i] >= 0 && lr[i] < rows, "logit row out of range");
    const QMat& head = has_head_ ? head_ : embed_;
    auto logits = at::empty({nl, head.n}, at::kFloat);
    if (dt == at::kFloat)
      run<float>(rows, id, pos, slot, rs, tab, nbt, block_size, k_cache, v_cache, nl, lr, head, logits, profile);
    else
      run<c10::BFloat16>(rows, id, pos, slot, rs, tab, nbt, block_size, k_cache, v_cache, nl, lr, head, logits,
                         profile);
    return logits;
  }

  // Seconds spent per phase by thread 0 (with the barrier waits that end each phase), summed over the
  // forward calls made with profile=true since the last reset.
  std::vector<std::pair<std::string, double>> phase_times() const {
    std::vector<std::pair<std::string, double>> out;
    for (int p = 0; p < kPhases; ++p) out.emplace_back(kPhaseNames[p], times_[p]);
    return out;
  }
  void reset_phase_times() { std::fill(std::begin(times_), std::end(times_), 0.0); }

 private:
  static constexpr int kPhases = 9;
  static constexpr const char* kPhaseNames[kPhases] = {
      "embed", "rmsnorm+quantize", "qkv matmul", "rotary+kv write", "attention", "o_proj matmul+residual",
      "gate_up matmul+silu*mul", "down matmul+residual", "final norm+lm_head"};

  template <typename C>
  void run(int64_t rows, const int64_t* id, const int64_t* pos, const int64_t* slot, const int64_t* rs,
           const int64_t* tab, int64_t nbt, int64_t bs, const std::vector<at::Tensor>& kc,
           const std::vector<at::Tensor>& vc, int64_t nl, const int64_t* lr, const QMat& head, at::Tensor& logits,
           bool profile) {
    const int64_t qkv_n = (nh_ + 2 * nkv_) * hd_, group = nh_ / nkv_;
    std::vector<float> hbuf(rows * h_), xn(rows * h_), qkv(rows * qkv_n), att(rows * nh_ * hd_), act(rows * i_);
    int64_t max_ctx = 0;
    for (int64_t r = 0; r < rows; ++r) max_ctx = std::max(max_ctx, pos[r] + 1);
    ActBuf a_h;  // the LM head's rows
    a_h.resize(rows, h_);
    std::vector<QAct> acts_h(rows);
    for (int64_t r = 0; r < rows; ++r) acts_h[r] = a_h.row(r);
    const float scale = 1.0f / std::sqrt(float(hd_));
    const int64_t half = hd_ / 2;
    const float* cosp = cos_.data_ptr<float>();
    const float* sinp = sin_.data_ptr<float>();
    float* out_logits = logits.data_ptr<float>();
    const int nthreads = std::max(1, at::get_num_threads());
    double* times = times_;
    using clock = std::chrono::steady_clock;

#pragma omp parallel num_threads(nthreads)
    {
      const bool timer = profile && omp_get_thread_num() == 0;
      auto t0 = clock::now();
      auto mark = [&](int phase) {
        if (timer) {
          const auto t1 = clock::now();
          times[phase] += std::chrono::duration<double>(t1 - t0).count();
          t0 = t1;
        }
      };
      std::vector<float> scores(group * max_ctx);
      // Every thread normalizes and quantizes all rows itself into its own buffers: a matmul can then start
      // without a barrier after the small per-row steps (4 of 10 barriers per layer saved).
      ActBuf own_h, own_i;
      own_h.resize(rows, h_);
      own_i.resize(rows, i_);
      std::vector<QAct> ah(rows), ai(rows);
      for (int64_t r = 0; r < rows; ++r) {
        ah[r] = own_h.row(r);
        ai[r] = own_i.row(r);
      }
      std::vector<float> own_xn(h_);

#pragma omp for
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t nb = h_ / kBlock;
        for (int64_t e = 0; e < h_; ++e) {
          const int64_t g = e / kBlock;
          float v;
          if (embed_.kind == Q8) {
            v = embed_.dp[id[r] * nb + g] * float(reinterpret_cast<const int8_t*>(embed_.q)[id[r] * h_ + e]);
          } else {
            const int64_t s = e / kSpan, j = e % kSpan;
            const uint8_t byte = embed_.q[id[r] * (h_ / 2) + s * 32 + (j % 32)];
            v = embed_.dp[id[r] * nb + g] * float(j < 32 ? (byte & 0x0F) : (byte >> 4)) + embed_.bp[id[r] * nb + g];
          }
          hbuf[r * h_ + e] = v;
        }
      }
      mark(0);

      for (size_t li = 0; li < layers_.size(); ++li) {
        const Layer& L = layers_[li];
        C* kcp = static_cast<C*>(kc[li].data_ptr());
        C* vcp = static_cast<C*>(vc[li].data_ptr());

        for (int64_t r = 0; r < rows; ++r) {
          rmsnorm(&hbuf[r * h_], L.attn_norm.data_ptr<float>(), h_, eps_, own_xn.data());
          quantize_row(own_xn.data(), h_, ah[r]);
        }
        mark(1);
        matmul(L.qkv, ah.data(), rows, qkv.data(), qkv_n, false);
        mark(2);

#pragma omp for
        for (int64_t r = 0; r < rows; ++r) {
          float* q = &qkv[r * qkv_n];
          const float* c = cosp + pos[r] * half;
          const float* s = sinp + pos[r] * half;
          for (int64_t hh = 0; hh < nh_ + nkv_; ++hh) {  // q heads then k heads: rotate-half
            float* x = q + hh * hd_;
            for (int64_t i = 0; i < half; ++i) {
              const float x1 = x[i], x2 = x[i + half];
              x[i] = x1 * c[i] - x2 * s[i];
              x[i + half] = x2 * c[i] + x1 * s[i];
            }
          }
          const float* kp = q + nh_ * hd_;
          const float* vp = kp + nkv_ * hd_;
          C* kd = kcp + slot[r] * nkv_ * hd_;
          C* vd = vcp + slot[r] * nkv_ * hd_;
          for (int64_t i = 0; i < nkv_ * hd_; i += 16) {
            store16(kd + i, _mm512_loadu_ps(kp + i));
            store16(vd + i, _mm512_loadu_ps(vp + i));
          }
        }
        mark(3);

#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < rows * nkv_; ++task) {
          const int64_t r = task / nkv_, kvh = task % nkv_;
          const int64_t ctx = pos[r] + 1;
          const int64_t* table = tab + rs[r] * nbt;
          const float* qh = &qkv[r * qkv_n + kvh * group * hd_];
          for (int64_t p = 0; p < ctx; ++p) {
            const C* kp = kcp + ((table[p / bs] * bs + p % bs) * nkv_ + kvh) * hd_;
            for (int64_t g = 0; g < group; ++g) {
              __m512 acc = _mm512_setzero_ps();
              for (int64_t i = 0; i < hd_; i += 16)
                acc = _mm512_fmadd_ps(_mm512_loadu_ps(qh + g * hd_ + i), load16(kp + i), acc);
              scores[g * ctx + p] = hsum(acc) * scale;
            }
          }
          for (int64_t g = 0; g < group; ++g) {
            float* sc = &scores[g * ctx];
            float mx = -INFINITY;
            for (int64_t p = 0; p < ctx; ++p) mx = std::max(mx, sc[p]);
            float sum = 0;
            for (int64_t p = 0; p < ctx; ++p) {
              sc[p] = std::exp(sc[p] - mx);
              sum += sc[p];
            }
            const float inv = 1.0f / sum;
            for (int64_t p = 0; p < ctx; ++p) sc[p] *= inv;
          }
          float* out = &att[r * nh_ * hd_ + kvh * group * hd_];
          std::fill(out, out + group * hd_, 0.0f);
          for (int64_t p = 0; p < ctx; ++p) {
            const C* vp = vcp + ((table[p / bs] * bs + p % bs) * nkv_ + kvh) * hd_;
            for (int64_t i = 0; i < hd_; i += 16) {
              const __m512 v = load16(vp + i);
              for (int64_t g = 0; g < group; ++g) {
                float* o = out + g * hd_ + i;
                _mm512_storeu_ps(o, _mm512_fmadd_ps(_mm512_set1_ps(scores[g * ctx + p]), v, _mm512_loadu_ps(o)));
              }
            }
          }
        }
        mark(4);

        for (int64_t r = 0; r < rows; ++r) quantize_row(&att[r * nh_ * hd_], nh_ * hd_, ah[r]);
        matmul(L.o, ah.data(), rows, hbuf.data(), h_, true);
        mark(5);

        for (int64_t r = 0; r < rows; ++r) {
          rmsnorm(&hbuf[r * h_], L.ffn_norm.data_ptr<float>(), h_, eps_, own_xn.data());
          quantize_row(own_xn.data(), h_, ah[r]);
        }
        mark(1);
        matmul_swiglu(L.gate_up, ah.data(), rows, act.data());
        mark(6);
        for (int64_t r = 0; r < rows; ++r) quantize_row(&act[r * i_], i_, ai[r]);
        matmul(L.down, ai.data(), rows, hbuf.data(), h_, true);
        mark(7);
      }

      std::vector<QAct> head_acts(nl);
#pragma omp for
      for (int64_t i = 0; i < nl; ++i) {
        rmsnorm(&hbuf[lr[i] * h_], final_norm_.data_ptr<float>(), h_, eps_, &xn[lr[i] * h_]);
        quantize_row(&xn[lr[i] * h_], h_, acts_h[lr[i]]);
      }
      for (int64_t i = 0; i < nl; ++i) head_acts[i] = acts_h[lr[i]];
      matmul(head, head_acts.data(), nl, out_logits, head.n, false);
      mark(8);
    }
  }

  int64_t h_, i_, nh_, nkv_, hd_;
  float eps_;
  at::Tensor cos_, sin_, final_norm_;
  std::vector<Layer> layers_;
  QMat embed_, head_;
  bool has_head_ = false;
  double times_[kPhases] = {};
};

constexpr const char* QuantLlama::kPhaseNames[];

// y[M, N] = x[M, K] @ W^T through the same quantized-activation dot products (tests and one-off use).
at::Tensor linear(const at::Tensor& x, int64_t kind, const at::Tensor& qs, const at::Tensor& d, const at::Tensor& b) {
  const int64_t k = x.size(1);
  QMat w = make_qmat(kind, k, qs, d, b);
  auto xf = x.to(at::kFloat).contiguous();
  const int64_t m = xf.size(0);
  ActBuf buf;
  buf.resize(m, k);
  std::vector<QAct> acts(m);
  for (int64_t r = 0; r < m; ++r) {
    acts[r] = buf.row(r);
    quantize_row(xf.data_ptr<float>() + r * k, k, acts[r]);
  }
  auto y = at::empty({m, w.n}, at::kFloat);
  float* yp = y.data_ptr<float>();
#pragma omp parallel num_threads(std::max(1, at::get_num_threads()))
  matmul(w, acts.data(), m, yp, w.n, false);
  return y;
}

}  // namespace

#pragma GCC pop_options

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("cpu_supported", &cpu_supported, "whether this CPU has the AVX-512 VNNI instructions the kernels need");
  m.def("repack_q4", &repack_q4, "GGUF Q4_0/Q4_1 blocks uint8 [N, bytes] -> (nibbles, scales, biases)");
  m.def("repack_q8_0", &repack_q8_0, "GGUF Q8_0 blocks uint8 [N, bytes] -> (int8, scales, biases)");
  m.def("dequantize", &dequantize, "repacked weights -> float32 [N, K]");
  m.def("linear", &linear, "x [M, K] @ W^T with int8-quantized activations -> float32 [M, N]");
  py::class_<QuantLlama>(m, "QuantLlama")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, int64_t, double, at::Tensor, at::Tensor, at::Tensor>())
      .def("add_layer", &QuantLlama::add_layer)
      .def("set_embeddings", &QuantLlama::set_embeddings)
      .def("set_lm_head", &QuantLlama::set_lm_head)
      .def("forward", &QuantLlama::forward, py::call_guard<py::gil_scoped_release>())
      .def("phase_times", &QuantLlama::phase_times)
      .def("reset_phase_times", &QuantLlama::reset_phase_times);
}
