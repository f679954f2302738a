// wtc_ext::mlp_critic_loss: schema, the device-generic algorithm (CUDA), and the CPU kernel.
//
// Critic f: A_l = H_{l-1} W_l^T + b_l, H_l = relu(A_l) (l < L), f = A_L (one output). With
// x_hat = alpha * p + (1 - alpha) * q, the objective is
//     loss = -w1_weight * (mean f(p) - mean f(q)) + gp_weight * mean_b (||grad_x f(x_hat_b)|| - c)^2.
// The input gradient is a linear chain through the ReLU masks: g = V_1 W_1 with
// V_l = M_l * (V_{l+1} W_{l+1}) and V_L = 1. The masks are piecewise constant, so the penalty's
// gradient follows by reverse mode through that chain: W_l gets V_l^T Ubar_l, and
// Ubar_{l+1} = M_l * (Ubar_l W_l^T), starting from Ubar_1 = dGP/dg. The W1 term is ordinary
// backprop, and shares the chain: one backward sweep over the rows [p; q; x_hat] with per-row
// seeds (-w1/B, +w1/B, 1) gives the W1 term's deltas and the input gradients at once.
#include "critic/mlp_critic.h"
#include "common/thread_buffer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>

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

void check_args(const at::Tensor& p, const at::Tensor& q, const at::Tensor& alpha,
                at::TensorList weights, at::TensorList biases) {
  TORCH_CHECK_VALUE(p.dim() == 2, "mlp_critic_loss: expected real of shape (B, d), got ",
                    p.sizes());
  TORCH_CHECK_VALUE(p.size(0) > 0, "mlp_critic_loss: expected at least one row in real and fake, "
                    "got ", p.sizes());
  TORCH_CHECK_VALUE(q.sizes() == p.sizes(), "mlp_critic_loss: real and fake must have the same "
                    "shape, got ", p.sizes(), " and ", q.sizes());
  TORCH_CHECK_VALUE(q.device() == p.device() && q.scalar_type() == p.scalar_type(),
                    "mlp_critic_loss: real and fake must share device and dtype, got ",
                    p.device(), "/", p.scalar_type(), " and ", q.device(), "/", q.scalar_type());
  TORCH_CHECK_VALUE(p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble,
                    "mlp_critic_loss: expected float32 or float64 inputs, got ", p.scalar_type());
  TORCH_CHECK_VALUE(alpha.numel() == p.size(0) && alpha.device() == p.device() &&
                        alpha.scalar_type() == p.scalar_type(),
                    "mlp_critic_loss: expected alpha with one value per row (", p.size(0),
                    ") on the inputs' device and dtype");
  TORCH_CHECK_VALUE(!weights.empty() && weights.size() == biases.size(),
                    "mlp_critic_loss: expected as many biases as weights (at least one), got ",
                    weights.size(), " weights and ", biases.size(), " biases");
  int64_t width = p.size(1);
  for (size_t l = 0; l < weights.size(); ++l) {
    const at::Tensor& w = weights[l];
    const at::Tensor& b = biases[l];
    TORCH_CHECK_VALUE(w.dim() == 2 && w.size(1) == width,
                      "mlp_critic_loss: weights[", l, "] must have shape (out, ", width,
                      "), got ", w.sizes());
    TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == w.size(0), "mlp_critic_loss: biases[", l,
                      "] must have shape (", w.size(0), "), got ", b.sizes());
    TORCH_CHECK_VALUE(w.device() == p.device() && b.device() == p.device() &&
                          w.scalar_type() == p.scalar_type() && b.scalar_type() == p.scalar_type(),
                      "mlp_critic_loss: layer ", l, "'s parameters must be on ", p.device(),
                      " with dtype ", p.scalar_type());
    width = w.size(0);
  }
  TORCH_CHECK_VALUE(width == 1, "mlp_critic_loss: the last layer must have one output, got ",
                    width);
}

}  // namespace

CriticLossResult mlp_critic_loss_impl(const at::Tensor& p_in, const at::Tensor& q_in,
                                      const at::Tensor& alpha, at::TensorList weights,
                                      at::TensorList biases, double w1_weight, double gp_weight,
                                      double center, bool compute_grads,
                                      const PenaltyFn& penalty) {
  check_args(p_in, q_in, alpha, weights, biases);
  const at::Tensor p = p_in.contiguous();
  const at::Tensor q = q_in.contiguous();
  const int64_t B = p.size(0);
  const int64_t L = static_cast<int64_t>(weights.size());
  const bool with_w1 = w1_weight != 0.0;
  const auto opts = p.options();

  // Rows: [p; q; x_hat] when the W1 term is on, else x_hat alone.
  const at::Tensor x_hat = at::lerp(q, p, alpha.reshape({B, 1}));
  const at::Tensor x = with_w1 ? at::cat({p, q, x_hat}, 0) : x_hat;
  const int64_t n = x.size(0);
  const int64_t off = with_w1 ? 2 * B : 0;  // first x_hat row

  // Forward: H[0] = x, H[l] = relu(A_l).
  std::vector<at::Tensor> H(L);
  H[0] = x;
  for (int64_t l = 1; l < L; ++l) {
    H[l] = at::addmm(biases[l - 1], H[l - 1], weights[l - 1].t()).relu_();
  }
  const at::Tensor out = at::addmm(biases[L - 1], H[L - 1], weights[L - 1].t()).view({n});
  const at::Tensor w1 = with_w1 ? (out.narrow(0, 0, B).sum() - out.narrow(0, B, B).sum()) /
                                      static_cast<double>(B)
                                : at::zeros({}, opts);

  // One backward sweep with per-row seeds: D[l] = d(seeded output)/dA_l.
  at::Tensor seeds = at::ones({n}, opts);
  if (with_w1) {
    seeds.narrow(0, 0, B).fill_(-w1_weight / static_cast<double>(B));
    seeds.narrow(0, B, B).fill_(w1_weight / static_cast<double>(B));
  }
  std::vector<at::Tensor> D(L);
  at::Tensor up = seeds.unsqueeze(1) * weights[L - 1];  // (n, width of layer L's input)
  for (int64_t l = L - 1; l >= 1; --l) {
    D[l] = at::threshold_backward(up, H[l], 0);
    up = at::mm(D[l], weights[l - 1]);
  }
  // up's x_hat rows are the critic's input gradients; its p and q rows the W1 term's.
  const at::Tensor g = up.narrow(0, off, B);
  auto [per_row, G] = penalty(g, center, gp_weight);
  at::Tensor gp = per_row.mean();
  // A non-finite input can leave g finite (a NaN fails every ReLU mask); the contract is a NaN
  // result, so fold the critic's outputs in: 0 * x is 0 for finite x and NaN otherwise.
  gp = gp + out.narrow(0, off, B).sum() * 0;
  const at::Tensor loss = gp * gp_weight - w1 * w1_weight;

  std::vector<at::Tensor> grad_w, grad_b;
  at::Tensor grad_p, grad_q;
  if (!compute_grads) {
    return {loss, w1, gp, grad_w, grad_b, at::empty({0}, opts), at::empty({0}, opts)};
  }
  grad_w.resize(L);
  grad_b.resize(L);
  // Each weight's gradient is one product over all rows: the W1 term's rows [p; q] pair D_l
  // with the layer's input H_{l-1}, the x_hat rows pair V_l (D_l's x_hat rows) with the
  // penalty chain's Ubar_l. So Ubar_l is written over H_{l-1}'s x_hat rows (no longer needed:
  // their masks were used) and grad W_l = D_l^T H_{l-1}, one matrix product per layer.
  at::Tensor ubar = G;
  for (int64_t l = 1; l <= L; ++l) {
    H[l - 1].narrow(0, off, B).copy_(ubar);
    if (l < L) {
      ubar = at::threshold_backward(at::mm(ubar, weights[l - 1].t()), H[l].narrow(0, off, B), 0);
      grad_w[l - 1] = at::mm(D[l].t(), H[l - 1]);
      grad_b[l - 1] = with_w1 ? D[l].narrow(0, 0, 2 * B).sum(0) : at::zeros_like(biases[l - 1]);
    } else {  // the last layer: seeds are D_L (1 on the x_hat rows)
      grad_w[L - 1] = at::mm(seeds.unsqueeze(0), H[L - 1]);
      grad_b[L - 1] = with_w1 ? seeds.narrow(0, 0, 2 * B).sum().reshape({1})
                              : at::zeros_like(biases[L - 1]);
    }
  }
  if (with_w1) {
    grad_p = up.narrow(0, 0, B).clone();  // outputs must not alias one another
    grad_q = up.narrow(0, B, B).clone();
  } else {
    // The penalty does not depend on real or fake almost everywhere (only through the masks).
    grad_p = at::zeros_like(p);
    grad_q = at::zeros_like(q);
  }
  return {loss, w1, gp, grad_w, grad_b, grad_p, grad_q};
}

namespace {

// ---- The CPU kernel ------------------------------------------------------------------------
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
  const int64_t d0 = widths[0];
  const int64_t n = with_w1 ? 3 * b : b;
  const int64_t off = with_w1 ? 2 * b : 0;  // first x_hat row
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
  std::vector<T*> H(L), D(L, nullptr);
  for (int64_t l = 0; l < L; ++l) H[l] = take(n * widths[l]);
  for (int64_t l = 1; l < L; ++l) D[l] = take(n * widths[l]);
  T* up0 = take(n * d0);
  T* out = take(n);
  T* seeds = take(n);
  T* tmp = take(b * wmax);
  T* narrow = take(narrow_size);
  // dst (rows x cols, row-major) = src^T, src being (cols x rows).
  auto transpose_into = [](const T* src, int64_t rows, int64_t cols, T* dst, bool add) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        dst[i * cols + j] = (add ? dst[i * cols + j] : T(0)) + src[j * rows + i];
      }
    }
  };

  // Rows: p, q, then x_hat = lerp(q, p, alpha) with ATen's two-sided formula (same values).
  if (with_w1) {
    std::copy(p, p + b * d0, H[0]);
    std::copy(q, q + b * d0, H[0] + b * d0);
  }
  for (int64_t i = 0; i < b; ++i) {
    const T a = alpha[i];
    T* x = H[0] + (off + i) * d0;
    for (int64_t k = 0; k < d0; ++k) {
      const T lo = q[i * d0 + k], hi = p[i * d0 + k];
      x[k] = std::abs(a) < T(0.5) ? lo + a * (hi - lo) : hi - (hi - lo) * (T(1) - a);
    }
  }

  // Forward: H_l = relu(H_{l-1} W_l^T + b_l); out = H_{L-1} w_L^T + b_L.
  for (int64_t l = 1; l < L; ++l) {
    const int64_t w = widths[l], w_in = widths[l - 1];
    for (int64_t i = 0; i < n; ++i) std::copy(bias[l - 1], bias[l - 1] + w, H[l] + i * w);
    gemm_rows<T>(false, true, n, w, w_in, T(1), H[l - 1], w_in, W[l - 1], w_in, T(1), H[l], w);
    // relu as ATen's: NaN stays NaN (a NaN input must give a NaN result)
    for (int64_t j = 0; j < n * w; ++j) H[l][j] = H[l][j] < T(0) ? T(0) : H[l][j];
  }
  const int64_t w_last = widths[L - 1];
  gemm_rows<T>(false, true, n, 1, w_last, T(1), H[L - 1], w_last, W[L - 1], w_last, T(0), out, 1);
  ChunkSums sums;
  for (int64_t i = 0; i < n; ++i) out[i] += bias[L - 1][0];
  if (with_w1) {
    for (int64_t i = 0; i < b; ++i) sums.w1 += static_cast<double>(out[i]) - out[b + i];
  }
  for (int64_t i = off; i < n; ++i) sums.guard += out[i];

  // One backward sweep with per-row seeds (-w1/B on p, +w1/B on q, 1 on x_hat):
  // D_l = d(seeded output)/dA_l; the sweep ends in the input gradients up0.
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
      gemm_rows<T>(true, true, w_in, n, w, T(1), W[l - 1], w_in, D[l], w, T(0), narrow, n);
      transpose_into(narrow, n, w_in, dst, false);
    } else {
      gemm_rows<T>(false, false, n, w_in, w, T(1), D[l], w, W[l - 1], w_in, T(0), dst, w_in);
    }
    if (l > 1) {
      for (int64_t j = 0; j < n * w_in; ++j) dst[j] = H[l - 1][j] > T(0) ? dst[j] : T(0);
    }
  }

  // Penalty on the x_hat rows; its gradient G is written over H_0's x_hat rows (the input
  // rows are not needed again, and grad W_1 = D_1^T H_0 then pairs D_1 with G there).
  const double g_scale = gp_weight / static_cast<double>(batch_total);
  for (int64_t i = 0; i < b; ++i) {
    const T* g = up0 + (off + i) * d0;
    double sq = 0;
    for (int64_t k = 0; k < d0; ++k) sq += static_cast<double>(g[k]) * g[k];
    const double norm = std::sqrt(sq);
    const double r = norm - center;
    sums.gp += r * r;
    // Rows with a zero gradient get a zero penalty gradient, as autograd's norm does.
    const double coef = norm > 0 ? g_scale * 2.0 * r / norm : 0.0;
    T* G = H[0] + (off + i) * d0;
    for (int64_t k = 0; k < d0; ++k) G[k] = static_cast<T>(coef * g[k]);
  }
  if (grads == nullptr) return sums;

  // Parameter gradients: the penalty's reverse chain Ubar_{l+1} = M_l * (Ubar_l W_l^T) is
  // written over H_l's x_hat rows once their masks are used, so grad W_l = D_l^T H_{l-1} is one
  // product over all rows (the W1 term's on p and q, the penalty's on x_hat).
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
  gemm_rows<T>(true, false, 1, w_last, n, T(1), seeds, 1, H[L - 1], w_last, beta,
               grads->weight[L - 1], w_last);
  double seed_sum = accumulate ? static_cast<double>(grads->bias[L - 1][0]) : 0.0;
  if (with_w1) {
    for (int64_t i = 0; i < 2 * b; ++i) seed_sum += seeds[i];
  }
  grads->bias[L - 1][0] = static_cast<T>(seed_sum);
  if (with_w1) {
    std::copy(up0, up0 + b * d0, grads->p);
    std::copy(up0 + b * d0, up0 + 2 * b * d0, grads->q);
  } else {
    // The penalty does not depend on real or fake almost everywhere (only through the masks).
    std::fill(grads->p, grads->p + b * d0, T(0));
    std::fill(grads->q, grads->q + b * d0, T(0));
  }
  return sums;
}

// Row chunks run side by side, one per thread, each through the whole algorithm with
// single-threaded products, and their additive shares are summed. At batch 64 a product split
// over two threads reaches about 60% of the rate of two independent single-threaded ones (by
// `torch.mm` timings of the critic's shapes), and the elementwise work runs in parallel too.
constexpr int64_t kMinChunkRows = 16;
constexpr int64_t kBlockRows = 64;

template <typename T>
CriticLossResult critic_loss_cpu_typed(const at::Tensor& p, const at::Tensor& q,
                                       const at::Tensor& alpha, at::TensorList weights,
                                       at::TensorList biases, double w1_weight, double gp_weight,
                                       double center, bool compute_grads) {
  const int64_t B = p.size(0);
  const int64_t L = static_cast<int64_t>(weights.size());
  const bool with_w1 = w1_weight != 0.0;
  const auto opts = p.options();
  std::vector<at::Tensor> keep;  // contiguous copies, alive for the call
  std::vector<const T*> W(L), bias(L);
  std::vector<int64_t> widths(L + 1);
  widths[0] = p.size(1);
  for (int64_t l = 0; l < L; ++l) {
    keep.push_back(weights[l].contiguous());
    W[l] = keep.back().const_data_ptr<T>();
    keep.push_back(biases[l].contiguous());
    bias[l] = keep.back().const_data_ptr<T>();
    widths[l + 1] = weights[l].size(0);
  }
  const at::Tensor pc = p.contiguous(), qc = q.contiguous();
  const at::Tensor ac = alpha.reshape({B}).contiguous();
  const int64_t d0 = widths[0];
  const int64_t chunks = std::max<int64_t>(
      1, at::in_parallel_region() ? 1
                                  : std::min<int64_t>(at::get_num_threads(), B / kMinChunkRows));

  // Chunk 0 writes the gradients returned; the others their own, added afterwards.
  std::vector<at::Tensor> grad_w(compute_grads ? L : 0), grad_b(compute_grads ? L : 0);
  at::Tensor grad_p = at::empty({compute_grads ? B : 0, compute_grads ? d0 : 0}, opts);
  at::Tensor grad_q = at::empty_like(grad_p);
  std::vector<at::Tensor> extra;  // chunks 1.. : weight and bias gradients, layer by layer
  std::vector<ChunkGrads<T>> chunk_grads(compute_grads ? chunks : 0);
  for (int64_t c = 0; compute_grads && c < chunks; ++c) {
    const int64_t lo = B * c / chunks;
    for (int64_t l = 0; l < L; ++l) {
      at::Tensor gw = at::empty({widths[l + 1], widths[l]}, opts);
      at::Tensor gb = at::empty({widths[l + 1]}, opts);
      if (c == 0) {
        grad_w[l] = gw;
        grad_b[l] = gb;
      } else {
        extra.push_back(gw);
        extra.push_back(gb);
      }
      chunk_grads[c].weight.push_back(gw.data_ptr<T>());
      chunk_grads[c].bias.push_back(gb.data_ptr<T>());
    }
    chunk_grads[c].p = grad_p.data_ptr<T>() + lo * d0;
    chunk_grads[c].q = grad_q.data_ptr<T>() + lo * d0;
  }

  // A chunk runs in blocks of at most kBlockRows rows each of p, q and x_hat, adding up their
  // gradients: the block's matrices stay in cache (about 1 MB for the paper's critic) and the
  // working memory kept per thread stays bounded whatever the batch.
  std::vector<ChunkSums> sums(chunks);
  auto run = [&](int64_t c) {
    const int64_t lo = B * c / chunks, rows = B * (c + 1) / chunks - lo;
    ChunkGrads<T> block_grads;
    if (compute_grads) block_grads = chunk_grads[c];
    for (int64_t start = 0; start < rows; start += kBlockRows) {
      const int64_t r = lo + start, count = std::min(kBlockRows, rows - start);
      if (compute_grads) {
        block_grads.p = chunk_grads[c].p + start * d0;
        block_grads.q = chunk_grads[c].q + start * d0;
      }
      const ChunkSums part = critic_block<T>(
          pc.const_data_ptr<T>() + r * d0, qc.const_data_ptr<T>() + r * d0,
          ac.const_data_ptr<T>() + r, count, W, bias, widths, with_w1, w1_weight, gp_weight,
          center, B, compute_grads ? &block_grads : nullptr, start > 0);
      sums[c].w1 += part.w1;
      sums[c].gp += part.gp;
      sums[c].guard += part.guard;
    }
  };
  if (chunks == 1) {
    run(0);
  } else {
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) run(c);
    });
  }

  ChunkSums total;
  for (const auto& s : sums) {
    total.w1 += s.w1;
    total.gp += s.gp;
    total.guard += s.guard;
  }
  // The other chunks' gradients are added into chunk 0's (ATen's add splits the large ones
  // between the threads).
  for (size_t i = 0; i < extra.size(); i += 2) {
    const size_t l = (i / 2) % L;
    grad_w[l].add_(extra[i]);
    grad_b[l].add_(extra[i + 1]);
  }
  const double batch = static_cast<double>(B);
  const double w1 = with_w1 ? total.w1 / batch : 0.0;
  // A non-finite input can leave g finite (a NaN fails every ReLU mask); the contract is a NaN
  // result, so the critic's outputs are folded in: 0 * x is 0 for finite x and NaN otherwise.
  const double gp = total.gp / batch + 0.0 * total.guard;
  const double loss = gp * gp_weight - w1 * w1_weight;
  auto scalar = [&](double v) { return at::scalar_tensor(v, opts); };
  if (!compute_grads) {
    return {scalar(loss), scalar(w1), scalar(gp), {}, {}, at::empty({0}, opts),
            at::empty({0}, opts)};
  }
  return {scalar(loss), scalar(w1), scalar(gp), grad_w, grad_b, grad_p, grad_q};
}

CriticLossResult mlp_critic_loss_cpu(const at::Tensor& p, const at::Tensor& q,
                                     const at::Tensor& alpha, at::TensorList weights,
                                     at::TensorList biases, double w1_weight, double gp_weight,
                                     double center, bool compute_grads) {
  check_args(p, q, alpha, weights, biases);
  return AT_DISPATCH_FLOATING_TYPES(p.scalar_type(), "mlp_critic_loss_cpu", [&] {
    return critic_loss_cpu_typed<scalar_t>(p, q, alpha, weights, biases, w1_weight, gp_weight,
                                           center, compute_grads);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(wtc_ext, m) {
  m.def(
      "mlp_critic_loss(Tensor p, Tensor q, Tensor alpha, Tensor[] weights, Tensor[] biases, "
      "float w1_weight, float gp_weight, float center, bool compute_grads) -> (Tensor loss, "
      "Tensor w1, Tensor gp, Tensor[] grad_weights, Tensor[] grad_biases, Tensor grad_p, "
      "Tensor grad_q)");
}

TORCH_LIBRARY_IMPL(wtc_ext, CPU, m) { m.impl("mlp_critic_loss", &mlp_critic_loss_cpu); }

namespace {

using MlpCriticLossSignature = CriticLossResult(const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, at::TensorList, at::TensorList,
                                                double, double, double, bool);

const c10::TypedOperatorHandle<MlpCriticLossSignature>& mlp_critic_loss_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wtc_ext::mlp_critic_loss", "")
                             .typed<MlpCriticLossSignature>();
  return op;
}

// Autograd in C++: the forward already holds every gradient, so the backward hands them over
// (scaled by the incoming gradient unless that is 1). (A Python autograd registration cost a
// third of the op's time at batch 64 on a CPU.) The op's gradient outputs are returned as
// plain tensors without history.
class MlpCriticLossFunction : public torch::autograd::Function<MlpCriticLossFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& p, const at::Tensor& q,
                                                const at::Tensor& alpha, at::TensorList weights,
                                                at::TensorList biases, double w1_weight,
                                                double gp_weight, double center,
                                                std::vector<at::Tensor>* grads_out) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);  // no zero tensors for the outputs nobody differentiates
    auto [loss, w1, gp, grad_w, grad_b, grad_p, grad_q] = mlp_critic_loss_op().call(
        p, q, alpha, weights, biases, w1_weight, gp_weight, center, /*compute_grads=*/true);
    // The gradients have no history, so they are kept as plain data (the backward can then
    // hand them over to .grad without a copy) and reach the caller past the Function: only
    // the three scalars are its outputs (each output costs the Function's bookkeeping).
    std::vector<at::Tensor> grads(grad_w.begin(), grad_w.end());
    grads.insert(grads.end(), grad_b.begin(), grad_b.end());
    grads.push_back(grad_p);
    grads.push_back(grad_q);
    ctx->saved_data["grads"] = grads;
    ctx->saved_data["layers"] = static_cast<int64_t>(grad_w.size());
    ctx->mark_non_differentiable({w1, gp});
    *grads_out = std::move(grads);
    return {loss, w1, gp};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const int64_t L = ctx->saved_data["layers"].toInt();
    // p, q, alpha, L weights, L biases, three floats, the gradients' destination
    torch::autograd::variable_list result(3 + 2 * L + 4);
    const at::Tensor& grad_loss = grad_outputs[0];
    if (!grad_loss.defined()) return result;
    auto it = ctx->saved_data.find("grads");
    // Only a backward that frees the graph hands the gradients over, so this cannot fail in a
    // backward that PyTorch itself would allow.
    TORCH_CHECK(it != ctx->saved_data.end(),
                "wtc_ext critic loss: backward ran a second time through a freed graph; pass "
                "retain_graph=True to the first backward");
    std::vector<at::Tensor> scaled = it->second.toTensorVector();
    // loss.backward() seeds 1. On a CPU that is free to check, and when this backward frees the
    // graph the gradients are handed over as they are (AccumulateGrad takes a tensor nobody else
    // holds without copying it); scaling or copying them costs a tenth of the op at batch 64.
    // (Not under tracing: fake and functional tensors have no value to read.)
    const bool plain_cpu =
        grad_loss.device().is_cpu() &&
        !grad_loss.key_set().has_any(c10::DispatchKeySet(
            {c10::DispatchKey::Python, c10::DispatchKey::Functionalize}));
    if (!torch::autograd::get_current_graph_task_keep_graph() && plain_cpu &&
        grad_loss.numel() == 1 && grad_loss.item<double>() == 1.0) {
      ctx->saved_data.erase(it);
    } else {
      scaled = at::_foreach_mul(scaled, grad_loss);
    }
    for (int64_t l = 0; l < 2 * L; ++l) result[3 + l] = std::move(scaled[l]);
    result[0] = std::move(scaled[2 * L]);
    result[1] = std::move(scaled[2 * L + 1]);
    return result;
  }
};

CriticLossResult mlp_critic_loss_autograd(const at::Tensor& p, const at::Tensor& q,
                                          const at::Tensor& alpha, at::TensorList weights,
                                          at::TensorList biases, double w1_weight,
                                          double gp_weight, double center, bool compute_grads) {
  bool needs_grad = p.requires_grad() || q.requires_grad();
  for (const auto& t : weights) needs_grad = needs_grad || t.requires_grad();
  for (const auto& t : biases) needs_grad = needs_grad || t.requires_grad();
  if (!(compute_grads && needs_grad && at::GradMode::is_enabled())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return mlp_critic_loss_op().call(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                                     compute_grads);
  }
  std::vector<at::Tensor> grads;
  const auto out = MlpCriticLossFunction::apply(p, q, alpha, weights, biases, w1_weight,
                                                gp_weight, center, &grads);
  const int64_t L = static_cast<int64_t>(weights.size());
  std::vector<at::Tensor> grad_w(grads.begin(), grads.begin() + L);
  std::vector<at::Tensor> grad_b(grads.begin() + L, grads.begin() + 2 * L);
  return {out[0], out[1], out[2], grad_w, grad_b, grads[2 * L], grads[2 * L + 1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, Autograd, m) {
  m.impl("mlp_critic_loss", &mlp_critic_loss_autograd);
}

}  // namespace wtc
