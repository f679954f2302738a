// wtc_ext::mlp_critic_loss and stacked_mlp_critic_loss: the CPU kernel, the algorithm of
// mlp_critic.cpp on raw buffers.
//
// Every product is one BLAS call that writes (or accumulates into) its destination, and the
// elementwise steps between them (bias, ReLU, masks, penalty, bias gradients) are fused loops over
// rows that are in cache. At batch 64 the ATen version spent a fifth of its time in the ~50 small
// ops between products.
#include "critic/mlp_critic.h"
#include "common/thread_buffer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// The Fortran BLAS symbols of the library torch links, if it exports them (weak: null if not).
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}

namespace wtc {
namespace {

// The same algorithm as mlp_critic_loss_impl on raw buffers: every product is one BLAS call
// that writes (or accumulates into) its destination, and the elementwise steps between them
// (bias, ReLU, masks, penalty, bias gradients) are fused loops over rows that are in cache. At
// batch 64 the ATen version spent a fifth of its time in the ~50 small ops between products.

// Row-major C (M x N) = alpha * op(A) op(B) + beta * C; lda/ldb/ldc are row strides. BLAS is
// column-major, where a row-major buffer reads as its transpose: compute C^T = op(B)^T op(A)^T.
// The BLAS that torch links (MKL or OpenBLAS export the Fortran symbols) is called directly:
// an ATen product costs a dispatch, checks and views per call. Where the symbols are absent, or
// WTC_CRITIC_GEMM=aten is set (so that path is tested too), the products go through at::addmm_.
template <typename T>
void gemm_rows(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
               int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  static const bool aten_only = [] {
    const char* env = std::getenv("WTC_CRITIC_GEMM");
    return env != nullptr && std::string(env) == "aten";
  }();
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  const bool fits = std::max({M, N, K, lda, ldb, ldc}) <= kIntMax && M * ldc <= kIntMax;
  const bool has_blas = std::is_same_v<T, float> ? sgemm_ != nullptr : dgemm_ != nullptr;
  if (!aten_only && fits && has_blas && K > 0) {
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int la = static_cast<int>(std::max<int64_t>(ldb, 1));
    const int lb = static_cast<int>(std::max<int64_t>(lda, 1));
    const int lc = static_cast<int>(std::max<int64_t>(ldc, 1));
    if constexpr (std::is_same_v<T, float>) {
      sgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
    } else {
      dgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
    }
    return;
  }
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto view = [&](const T* ptr, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    at::Tensor t = at::from_blob(const_cast<T*>(ptr), {trans ? cols : rows, trans ? rows : cols},
                                 {ld, 1}, opts);
    return trans ? t.t() : t;
  };
  at::Tensor c = at::from_blob(C, {M, N}, {ldc, 1}, opts);
  c.addmm_(view(A, M, K, lda, trans_a), view(B, K, N, ldb, trans_b), beta, alpha);
}

// One chunk's scalar shares (sums over its rows, divided by the batch size at the end).
struct ChunkSums {
  double w1 = 0;     // sum f(p) - sum f(q)
  double gp = 0;     // sum (||g|| - c)^2
  double guard = 0;  // sum f(x_hat): NaN when an input is not finite
};

template <typename T>
struct ChunkGrads {
  std::vector<T*> weight, bias;  // per layer
  T* p = nullptr;                // the chunk's rows of grad_p and grad_q
  T* q = nullptr;
};

// One block's rows and working matrices: rows [p; q; x_hat] (b rows each; x_hat alone when the
// W1 term is off), every matrix row-major in this thread's kept buffer.
template <typename T>
struct BlockMatrices {
  int64_t L = 0, b = 0, n = 0, d0 = 0;  // layers, rows per part, all rows, input width
  int64_t off = 0;                      // first x_hat row
  bool with_w1 = false;
  std::vector<T*> H, D;  // H_0..H_{L-1} and D_1..D_{L-1} (n x widths[l]); D[0] unused
  T* up0 = nullptr;      // n x d0: the input gradients, the end of the backward sweep
  T* out = nullptr;      // n: the critic's outputs
  T* seeds = nullptr;    // n: the backward sweep's per-row seeds
  T* tmp = nullptr;      // b x (widest layer input)
  T* narrow = nullptr;   // transposed products of layers narrowing towards the input
};

// dst (rows x cols, row-major) = src^T (plus dst when add), src being (cols x rows).
template <typename T>
inline void transpose_into(const T* src, int64_t rows, int64_t cols, T* dst, bool add) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      dst[i * cols + j] = (add ? dst[i * cols + j] : T(0)) + src[j * rows + i];
    }
  }
}

// The block's shapes, and its matrices carved out of the buffer this thread keeps between calls.
template <typename T>
BlockMatrices<T> block_matrices(int64_t b, const std::vector<int64_t>& widths, int64_t L,
                                bool with_w1) {
  BlockMatrices<T> m;
  m.L = L;
  m.b = b;
  m.d0 = widths[0];
  m.n = with_w1 ? 3 * b : b;
  m.off = with_w1 ? 2 * b : 0;
  m.with_w1 = with_w1;
  const int64_t n = m.n, d0 = m.d0;
  int64_t wmax = 0;
  for (int64_t l = 0; l < L; ++l) wmax = std::max(wmax, widths[l]);

  // A layer narrowing towards the input (w_in < w: the critic's first, 10 -> 256) has its two
  // narrow products computed transposed, into `narrow`, and transposed back: BLAS runs
  // (n x 256)(256 x 10) and (256 x n)(n x 10) at about a quarter of the rate of
  // (10 x 256)(256 x n) and (10 x n)(n x 256) (measured with MKL, n = 96).
  size_t narrow_size = 0;
  for (int64_t l = 1; l < L; ++l) {
    if (widths[l - 1] < widths[l]) {
      narrow_size = std::max<size_t>(narrow_size, widths[l - 1] * std::max(n, widths[l]));
    }
  }
  // Layout: H_0..H_{L-1} (n x widths[l]), D_1..D_{L-1} (n x widths[l]), up0 (n x d0),
  // out and seeds (n), tmp (b x wmax), narrow.
  size_t total = 2 * static_cast<size_t>(n) + static_cast<size_t>(b) * wmax +
                 static_cast<size_t>(n) * d0 + narrow_size;
  for (int64_t l = 0; l < L; ++l) total += static_cast<size_t>(n) * widths[l] * (l ? 2 : 1);
  // Every matrix starts on a 64-byte boundary (a cache line; what BLAS kernels prefer).
  constexpr int64_t kAlign = 64 / sizeof(T);
  // 2L + 4 matrices and the base to align; the buffer is kept per thread between calls
  T* cursor = static_cast<T*>(
      thread_buffer<struct CriticBlock>((total + (2 * L + 6) * kAlign) * sizeof(T)));
  cursor += (kAlign - (reinterpret_cast<uintptr_t>(cursor) / sizeof(T)) % kAlign) % kAlign;
  auto take = [&cursor](int64_t count) {
    T* at = cursor;
    cursor += (count + kAlign - 1) / kAlign * kAlign;
    return at;
  };
  m.H.assign(L, nullptr);
  m.D.assign(L, nullptr);
  for (int64_t l = 0; l < L; ++l) m.H[l] = take(n * widths[l]);
  for (int64_t l = 1; l < L; ++l) m.D[l] = take(n * widths[l]);
  m.up0 = take(n * d0);
  m.out = take(n);
  m.seeds = take(n);
  m.tmp = take(b * wmax);
  m.narrow = take(narrow_size);
  return m;
}

// H_0's rows: p, q, then x_hat = lerp(q, p, alpha) with ATen's two-sided formula (same values).
template <typename T>
void input_rows(const BlockMatrices<T>& m, const T* p, const T* q, const T* alpha) {
  const int64_t b = m.b, d0 = m.d0, off = m.off;
  T* H0 = m.H[0];
  if (m.with_w1) {
    std::copy(p, p + b * d0, H0);
    std::copy(q, q + b * d0, H0 + b * d0);
  }
  for (int64_t i = 0; i < b; ++i) {
    const T a = alpha[i];
    T* x = H0 + (off + i) * d0;
    for (int64_t k = 0; k < d0; ++k) {
      const T lo = q[i * d0 + k], hi = p[i * d0 + k];
      x[k] = std::abs(a) < T(0.5) ? lo + a * (hi - lo) : hi - (hi - lo) * (T(1) - a);
    }
  }
}

// Forward: H_l = relu(H_{l-1} W_l^T + b_l); out = H_{L-1} w_L^T + b_L. Adds the W1 term's and
// the guard's shares to sums.
template <typename T>
void forward_rows(const BlockMatrices<T>& m, const std::vector<const T*>& W,
                  const std::vector<const T*>& bias, const std::vector<int64_t>& widths,
                  ChunkSums& sums) {
  const int64_t L = m.L, n = m.n, b = m.b, off = m.off;
  const std::vector<T*>& H = m.H;
  T* out = m.out;
  for (int64_t l = 1; l < L; ++l) {
    const int64_t w = widths[l], w_in = widths[l - 1];
    for (int64_t i = 0; i < n; ++i) std::copy(bias[l - 1], bias[l - 1] + w, H[l] + i * w);
    gemm_rows<T>(false, true, n, w, w_in, T(1), H[l - 1], w_in, W[l - 1], w_in, T(1), H[l], w);
    // relu as ATen's: NaN stays NaN (a NaN input must give a NaN result)
    for (int64_t j = 0; j < n * w; ++j) H[l][j] = H[l][j] < T(0) ? T(0) : H[l][j];
  }
  const int64_t w_last = widths[L - 1];
  gemm_rows<T>(false, true, n, 1, w_last, T(1), H[L - 1], w_last, W[L - 1], w_last, T(0), out, 1);
  for (int64_t i = 0; i < n; ++i) out[i] += bias[L - 1][0];
  if (m.with_w1) {
    for (int64_t i = 0; i < b; ++i) sums.w1 += static_cast<double>(out[i]) - out[b + i];
  }
  for (int64_t i = off; i < n; ++i) sums.guard += out[i];
}

// One backward sweep with per-row seeds (-w1/B on p, +w1/B on q, 1 on x_hat):
// D_l = d(seeded output)/dA_l; the sweep ends in the input gradients up0.
template <typename T>
void backward_sweep(const BlockMatrices<T>& m, const std::vector<const T*>& W,
                    const std::vector<int64_t>& widths, double w1_weight, int64_t batch_total) {
  const int64_t L = m.L, n = m.n, b = m.b, off = m.off;
  const std::vector<T*>& H = m.H;
  const std::vector<T*>& D = m.D;
  T* up0 = m.up0;
  T* seeds = m.seeds;
  const int64_t w_last = widths[L - 1];
  const T w1_seed = static_cast<T>(w1_weight / static_cast<double>(batch_total));
  for (int64_t i = 0; i < n; ++i) seeds[i] = i >= off ? T(1) : (i < b ? -w1_seed : w1_seed);
  {
    T* top = L > 1 ? D[L - 1] : up0;
    for (int64_t i = 0; i < n; ++i) {
      const T* h = H[L - 1] + i * w_last;
      T* row = top + i * w_last;
      for (int64_t j = 0; j < w_last; ++j) {
        const T v = seeds[i] * W[L - 1][j];
        row[j] = (L == 1 || h[j] > T(0)) ? v : T(0);
      }
    }
  }
  for (int64_t l = L - 1; l >= 1; --l) {
    const int64_t w = widths[l], w_in = widths[l - 1];
    T* dst = l > 1 ? D[l - 1] : up0;
    if (w_in < w) {
      gemm_rows<T>(true, true, w_in, n, w, T(1), W[l - 1], w_in, D[l], w, T(0), m.narrow, n);
      transpose_into(m.narrow, n, w_in, dst, false);
    } else {
      gemm_rows<T>(false, false, n, w_in, w, T(1), D[l], w, W[l - 1], w_in, T(0), dst, w_in);
    }
    if (l > 1) {
      for (int64_t j = 0; j < n * w_in; ++j) dst[j] = H[l - 1][j] > T(0) ? dst[j] : T(0);
    }
  }
}

// Penalty on the x_hat rows; its gradient G is written over H_0's x_hat rows (the input
// rows are not needed again, and grad W_1 = D_1^T H_0 then pairs D_1 with G there).
template <typename T>
void penalty_rows(const BlockMatrices<T>& m, double gp_weight, double center,
                  int64_t batch_total, ChunkSums& sums) {
  const int64_t b = m.b, d0 = m.d0, off = m.off;
  const double g_scale = gp_weight / static_cast<double>(batch_total);
  for (int64_t i = 0; i < b; ++i) {
    const T* g = m.up0 + (off + i) * d0;
    double sq = 0;
    for (int64_t k = 0; k < d0; ++k) sq += static_cast<double>(g[k]) * g[k];
    const double norm = std::sqrt(sq);
    const double r = norm - center;
    sums.gp += r * r;
    // Rows with a zero gradient get a zero penalty gradient, as autograd's norm does.
    const double coef = norm > 0 ? g_scale * 2.0 * r / norm : 0.0;
    T* G = m.H[0] + (off + i) * d0;
    for (int64_t k = 0; k < d0; ++k) G[k] = static_cast<T>(coef * g[k]);
  }
}

// Parameter gradients: the penalty's reverse chain Ubar_{l+1} = M_l * (Ubar_l W_l^T) is
// written over H_l's x_hat rows once their masks are used, so grad W_l = D_l^T H_{l-1} is one
// product over all rows (the W1 term's on p and q, the penalty's on x_hat). Then the input
// gradients of p and q.
template <typename T>
void parameter_gradients(const BlockMatrices<T>& m, const std::vector<const T*>& W,
                         const std::vector<int64_t>& widths, const ChunkGrads<T>* grads,
                         bool accumulate) {
  const int64_t L = m.L, n = m.n, b = m.b, d0 = m.d0, off = m.off;
  const bool with_w1 = m.with_w1;
  const std::vector<T*>& H = m.H;
  const std::vector<T*>& D = m.D;
  T* narrow = m.narrow;
  T* tmp = m.tmp;
  const T beta = accumulate ? T(1) : T(0);
  for (int64_t l = 1; l < L; ++l) {
    const int64_t w = widths[l], w_in = widths[l - 1];
    gemm_rows<T>(false, true, b, w, w_in, T(1), H[l - 1] + off * w_in, w_in, W[l - 1], w_in,
                 T(0), tmp, w);
    if (w_in < w) {
      gemm_rows<T>(true, false, w_in, w, n, T(1), H[l - 1], w_in, D[l], w, T(0), narrow, w);
      transpose_into(narrow, w, w_in, grads->weight[l - 1], accumulate);
    } else {
      gemm_rows<T>(true, false, w, w_in, n, T(1), D[l], w, H[l - 1], w_in, beta,
                   grads->weight[l - 1], w_in);
    }
    T* gb = grads->bias[l - 1];
    if (!accumulate) std::fill(gb, gb + w, T(0));
    if (with_w1) {
      for (int64_t i = 0; i < 2 * b; ++i) {
        const T* row = D[l] + i * w;
        for (int64_t j = 0; j < w; ++j) gb[j] += row[j];
      }
    }
    T* __restrict__ hx = H[l] + off * w;
    const T* __restrict__ t = tmp;
    for (int64_t j = 0; j < b * w; ++j) {
      const T v = t[j];  // loaded unconditionally: a branch-free, vectorised select
      hx[j] = hx[j] > T(0) ? v : T(0);
    }
  }
  // The last layer: D_L is the seeds.
  const int64_t w_last = widths[L - 1];
  const T* seeds = m.seeds;
  gemm_rows<T>(true, false, 1, w_last, n, T(1), seeds, 1, H[L - 1], w_last, beta,
               grads->weight[L - 1], w_last);
  double seed_sum = accumulate ? static_cast<double>(grads->bias[L - 1][0]) : 0.0;
  if (with_w1) {
    for (int64_t i = 0; i < 2 * b; ++i) seed_sum += seeds[i];
  }
  grads->bias[L - 1][0] = static_cast<T>(seed_sum);
  const T* up0 = m.up0;
  if (with_w1) {
    std::copy(up0, up0 + b * d0, grads->p);
    std::copy(up0 + b * d0, up0 + 2 * b * d0, grads->q);
  } else {
    // The penalty does not depend on real or fake almost everywhere (only through the masks).
    std::fill(grads->p, grads->p + b * d0, T(0));
    std::fill(grads->q, grads->q + b * d0, T(0));
  }
}

// The whole objective for rows [p; q; x_hat] of one block (b rows each; x_hat alone when
// with_w1 is false). widths[l] is layer l's input width (widths[L] = 1). The weight and bias
// gradients are written (accumulate false) or added to (true); grads->p and q are written.
template <typename T>
ChunkSums critic_block(const T* p, const T* q, const T* alpha, int64_t b,
                       const std::vector<const T*>& W, const std::vector<const T*>& bias,
                       const std::vector<int64_t>& widths, bool with_w1, double w1_weight,
                       double gp_weight, double center, int64_t batch_total,
                       const ChunkGrads<T>* grads, bool accumulate) {
  const int64_t L = static_cast<int64_t>(W.size());
  const BlockMatrices<T> m = block_matrices<T>(b, widths, L, with_w1);
  ChunkSums sums;
  input_rows(m, p, q, alpha);
  forward_rows(m, W, bias, widths, sums);
  backward_sweep(m, W, widths, w1_weight, batch_total);
  penalty_rows(m, gp_weight, center, batch_total, sums);
  if (grads == nullptr) return sums;
  parameter_gradients(m, W, widths, grads, accumulate);
  return sums;
}

// Row chunks run side by side, one per thread, each through the whole algorithm with
// single-threaded products, and their additive shares are summed. At batch 64 a product split
// over two threads reaches about 60% of the rate of two independent single-threaded ones (by
// `torch.mm` timings of the critic's shapes), and the elementwise work runs in parallel too.
// The stacked op's runs are work items of the same kind: (run, chunk) pairs, a run split into
// chunks only when there are fewer runs than threads.
constexpr int64_t kMinChunkRows = 16;
constexpr int64_t kBlockRows = 64;

// The critic's layers as contiguous buffers: W[l], bias[l] (run 0's for the stacked op, whose
// runs follow one another), and widths[l] = layer l's input width (widths[L] = 1). `keep` holds
// the contiguous copies alive for the call.
template <typename T>
struct CriticLayers {
  std::vector<at::Tensor> keep;
  std::vector<const T*> W, bias;
  std::vector<int64_t> widths;

  // Run r's layers (r = 0 for the single op).
  std::pair<std::vector<const T*>, std::vector<const T*>> run(int64_t r) const {
    std::vector<const T*> w(W.size()), b(bias.size());
    for (size_t l = 0; l < W.size(); ++l) {
      w[l] = W[l] + r * widths[l + 1] * widths[l];
      b[l] = bias[l] + r * widths[l + 1];
    }
    return {w, b};
  }
};

template <typename T>
CriticLayers<T> critic_layers(int64_t d0, at::TensorList weights, at::TensorList biases) {
  const int64_t L = static_cast<int64_t>(weights.size());
  CriticLayers<T> layers;
  layers.W.resize(L);
  layers.bias.resize(L);
  layers.widths.resize(L + 1);
  layers.widths[0] = d0;
  for (int64_t l = 0; l < L; ++l) {
    layers.keep.push_back(weights[l].contiguous());
    layers.W[l] = layers.keep.back().template const_data_ptr<T>();
    layers.keep.push_back(biases[l].contiguous());
    layers.bias[l] = layers.keep.back().template const_data_ptr<T>();
    layers.widths[l + 1] = weights[l].size(-2);
  }
  return layers;
}

// One extra chunk's weight and bias gradients of one layer, added to its run's afterwards.
struct ExtraGradient {
  int64_t run, layer;
  at::Tensor weight, bias;
};

// The gradients of every work item (run r, chunk c): chunk 0 of a run writes the ones returned
// (its run's slice of grad_w, grad_b, and its rows of grad_p, grad_q), the other chunks their own
// weight and bias gradients (extra), added afterwards. `lead` is {R} for the stacked op, {} for
// the single one.
template <typename T>
struct ChunkedGradients {
  std::vector<at::Tensor> grad_w, grad_b;
  at::Tensor grad_p, grad_q;
  std::vector<ExtraGradient> extra;
  std::vector<ChunkGrads<T>> chunk;  // per work item r * chunks + c
};

std::vector<int64_t> with_lead(const std::vector<int64_t>& lead, std::vector<int64_t> sizes) {
  sizes.insert(sizes.begin(), lead.begin(), lead.end());
  return sizes;
}

template <typename T>
ChunkedGradients<T> chunked_gradients(const std::vector<int64_t>& widths,
                                      const std::vector<int64_t>& lead, int64_t R, int64_t B,
                                      int64_t chunks, bool compute_grads,
                                      const at::TensorOptions& opts) {
  const int64_t L = static_cast<int64_t>(widths.size()) - 1;
  const int64_t d0 = widths[0];
  ChunkedGradients<T> g;
  if (!compute_grads) return g;
  g.grad_w.resize(L);
  g.grad_b.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    g.grad_w[l] = at::empty(with_lead(lead, {widths[l + 1], widths[l]}), opts);
    g.grad_b[l] = at::empty(with_lead(lead, {widths[l + 1]}), opts);
  }
  g.grad_p = at::empty(with_lead(lead, {B, d0}), opts);
  g.grad_q = at::empty_like(g.grad_p);
  g.chunk.resize(R * chunks);
  for (int64_t r = 0; r < R; ++r) {
    for (int64_t c = 0; c < chunks; ++c) {
      ChunkGrads<T>& item = g.chunk[r * chunks + c];
      for (int64_t l = 0; l < L; ++l) {
        const int64_t w = widths[l + 1], w_in = widths[l];
        if (c == 0) {
          item.weight.push_back(g.grad_w[l].template data_ptr<T>() + r * w * w_in);
          item.bias.push_back(g.grad_b[l].template data_ptr<T>() + r * w);
        } else {
          g.extra.push_back({r, l, at::empty({w, w_in}, opts), at::empty({w}, opts)});
          item.weight.push_back(g.extra.back().weight.template data_ptr<T>());
          item.bias.push_back(g.extra.back().bias.template data_ptr<T>());
        }
      }
      const int64_t lo = B * c / chunks;
      item.p = g.grad_p.template data_ptr<T>() + (r * B + lo) * d0;
      item.q = g.grad_q.template data_ptr<T>() + (r * B + lo) * d0;
    }
  }
  return g;
}

// Both ops: the single one (stacked false: p (B, d), scalar outputs) and the stacked one (p
// (R, B, d), outputs per run). Runs share nothing but the threads.
template <typename T>
CriticLossResult critic_loss_cpu_typed(const at::Tensor& p, const at::Tensor& q,
                                       const at::Tensor& alpha, at::TensorList weights,
                                       at::TensorList biases, double w1_weight, double gp_weight,
                                       double center, bool compute_grads, bool stacked) {
  const int64_t R = stacked ? p.size(0) : 1;
  const int64_t B = p.size(-2);
  const std::vector<int64_t> lead = stacked ? std::vector<int64_t>{R} : std::vector<int64_t>{};
  const bool with_w1 = w1_weight != 0.0;
  const auto opts = p.options();
  const CriticLayers<T> layers = critic_layers<T>(p.size(-1), weights, biases);
  const at::Tensor pc = p.contiguous(), qc = q.contiguous();
  const at::Tensor ac = alpha.reshape({R * B}).contiguous();
  const int64_t d0 = layers.widths[0];
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t chunks =
      std::max<int64_t>(1, std::min<int64_t>((threads + R - 1) / R, B / kMinChunkRows));
  ChunkedGradients<T> grads =
      chunked_gradients<T>(layers.widths, lead, R, B, chunks, compute_grads, opts);

  // A chunk runs in blocks of at most kBlockRows rows each of p, q and x_hat, adding up their
  // gradients: the block's matrices stay in cache (about 1 MB for the paper's critic) and the
  // working memory kept per thread stays bounded whatever the batch.
  std::vector<ChunkSums> sums(R * chunks);
  auto run = [&](int64_t item) {
    const int64_t r = item / chunks, c = item % chunks;
    const int64_t lo = B * c / chunks, rows = B * (c + 1) / chunks - lo;
    const auto [W, bias] = layers.run(r);
    const T* p_run = pc.const_data_ptr<T>() + r * B * d0;
    const T* q_run = qc.const_data_ptr<T>() + r * B * d0;
    const T* a_run = ac.const_data_ptr<T>() + r * B;
    ChunkGrads<T> block_grads;
    if (compute_grads) block_grads = grads.chunk[item];
    for (int64_t start = 0; start < rows; start += kBlockRows) {
      const int64_t i = lo + start, count = std::min(kBlockRows, rows - start);
      if (compute_grads) {
        block_grads.p = grads.chunk[item].p + start * d0;
        block_grads.q = grads.chunk[item].q + start * d0;
      }
      const ChunkSums part = critic_block<T>(
          p_run + i * d0, q_run + i * d0, a_run + i, count, W, bias, layers.widths, with_w1,
          w1_weight, gp_weight, center, B, compute_grads ? &block_grads : nullptr, start > 0);
      sums[item].w1 += part.w1;
      sums[item].gp += part.gp;
      sums[item].guard += part.guard;
    }
  };
  if (R * chunks == 1) {
    run(0);
  } else {
    at::parallel_for(0, R * chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) run(item);
    });
  }

  // The other chunks' gradients are added into chunk 0's (ATen's add splits the large ones
  // between the threads).
  for (const ExtraGradient& e : grads.extra) {
    (stacked ? grads.grad_w[e.layer].select(0, e.run) : grads.grad_w[e.layer]).add_(e.weight);
    (stacked ? grads.grad_b[e.layer].select(0, e.run) : grads.grad_b[e.layer]).add_(e.bias);
  }
  const auto out_opts = opts.device(at::kCPU);
  at::Tensor loss = at::empty(lead, out_opts), w1 = at::empty(lead, out_opts),
             gp = at::empty(lead, out_opts);
  const double batch = static_cast<double>(B);
  for (int64_t r = 0; r < R; ++r) {
    ChunkSums total;
    for (int64_t c = 0; c < chunks; ++c) {
      total.w1 += sums[r * chunks + c].w1;
      total.gp += sums[r * chunks + c].gp;
      total.guard += sums[r * chunks + c].guard;
    }
    const double w1_r = with_w1 ? total.w1 / batch : 0.0;
    // A non-finite input can leave g finite (a NaN fails every ReLU mask); the contract is a NaN
    // result, so the critic's outputs are folded in: 0 * x is 0 for finite x and NaN otherwise.
    const double gp_r = total.gp / batch + 0.0 * total.guard;
    loss.data_ptr<T>()[r] = static_cast<T>(gp_r * gp_weight - w1_r * w1_weight);
    w1.data_ptr<T>()[r] = static_cast<T>(w1_r);
    gp.data_ptr<T>()[r] = static_cast<T>(gp_r);
  }
  if (!compute_grads) {
    return {loss, w1, gp, {}, {}, at::empty({0}, opts), at::empty({0}, opts)};
  }
  return {loss, w1, gp, grads.grad_w, grads.grad_b, grads.grad_p, grads.grad_q};
}

CriticLossResult mlp_critic_loss_cpu(const at::Tensor& p, const at::Tensor& q,
                                     const at::Tensor& alpha, at::TensorList weights,
                                     at::TensorList biases, double w1_weight, double gp_weight,
                                     double center, bool compute_grads) {
  check_mlp_critic_loss_args(p, q, alpha, weights, biases);
  return AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "mlp_critic_loss_cpu", [&] {
    return critic_loss_cpu_typed<scalar_t>(p, q, alpha, weights, biases, w1_weight, gp_weight,
                                           center, compute_grads, /*stacked=*/false);
  });
}

CriticLossResult stacked_mlp_critic_loss_cpu(const at::Tensor& p, const at::Tensor& q,
                                             const at::Tensor& alpha, at::TensorList weights,
                                             at::TensorList biases, double w1_weight,
                                             double gp_weight, double center,
                                             bool compute_grads) {
  check_stacked_mlp_critic_loss_args(p, q, alpha, weights, biases);
  return AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "stacked_mlp_critic_loss_cpu", [&] {
    return critic_loss_cpu_typed<scalar_t>(p, q, alpha, weights, biases, w1_weight, gp_weight,
                                           center, compute_grads, /*stacked=*/true);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, CPU, m) {
  m.impl("mlp_critic_loss", &mlp_critic_loss_cpu);
  m.impl("stacked_mlp_critic_loss", &stacked_mlp_critic_loss_cpu);
}

}  // namespace wtc
