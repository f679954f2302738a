// See device_glue_on_cpu.h. The emulated kernels run every "thread" of a phase in turn before
// the next phase, which is what __syncthreads guarantees; they check the kernels' index
// arithmetic and the host glue, not CUDA itself (races, launch limits, the stream).
#include "testing/device_glue_on_cpu.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <memory>
#include <vector>

#include "common/column_shuffle.h"
#include "critic/mlp_critic.h"
#include "critic/penalty_row.h"
#include "permute_dims/permute_dims.h"
#include "permute_dims/sort_shuffle.h"
#include "wasserstein/merge_w1.h"
#include "wasserstein/wasserstein.h"

namespace wtc {
namespace {

namespace ss = sort_shuffle;

// ---- permute_dims: the kernels of cuda/permute_dims_kernel.cu

template <typename Word>
void shared_kernel(const Word* z, Word* out, int64_t* index, PermuteShape s, uint64_t seed,
                   uint64_t offset) {
  const int64_t columns = s.L * s.d;
  const ss::SharedLayout g = ss::shared_layout(s.B, columns);
  const int total = g.cols_per_block * g.P;
  std::vector<uint64_t> keys(total);  // the block's shared memory
  std::vector<uint32_t> rows(total);
  for (int64_t block = 0; block < g.blocks; ++block) {
    const int64_t first_col = block * g.cols_per_block;
    for (int t = 0; t < total / 2; ++t) {
      ss::fill_pair(t, first_col, columns, s.B, g.P, seed, offset, keys.data(), rows.data());
    }
    for (int k = 2; k <= g.P; k <<= 1) {
      for (int j = k >> 1; j > 0; j >>= 1) {
        for (int t = 0; t < total / 2; ++t) {
          ss::bitonic_exchange(t, k, j, g.P, keys.data(), rows.data());
        }
      }
    }
    for (int e = 0; e < total; ++e) {
      ss::write_entry(e, first_col, columns, s.B, s.d, g.P, rows.data(), z, out, index);
    }
  }
}

SortShuffleKernels emulated_shuffle_kernels(uint64_t seed, uint64_t offset) {
  SortShuffleKernels kernels;
  kernels.shared = [seed, offset](const at::Tensor& z, const at::Tensor& out, int64_t* index) {
    const PermuteShape s = permute_shape(z);
    TORCH_CHECK(s.B >= 2 && s.B <= ss::kSharedMaxRows, "the shared path needs 2 <= B <= ",
                ss::kSharedMaxRows, ", got ", s.B);
    const void* src = z.const_data_ptr();
    void* dst = out.data_ptr();
    switch (z.element_size()) {
      case 1: return shared_kernel(static_cast<const uint8_t*>(src), static_cast<uint8_t*>(dst), index, s, seed, offset);
      case 2: return shared_kernel(static_cast<const uint16_t*>(src), static_cast<uint16_t*>(dst), index, s, seed, offset);
      case 4: return shared_kernel(static_cast<const uint32_t*>(src), static_cast<uint32_t*>(dst), index, s, seed, offset);
      case 8: return shared_kernel(static_cast<const uint64_t*>(src), static_cast<uint64_t*>(dst), index, s, seed, offset);
      default: TORCH_CHECK(false, "unsupported element size ", z.element_size());
    }
  };
  kernels.keys = [seed, offset](const at::Tensor& keys) {
    const PermuteShape s = permute_shape(keys);
    int64_t* k = keys.data_ptr<int64_t>();
    for (int64_t e = 0; e < keys.numel(); ++e) {
      k[e] = ss::key_of_element(e, s.B, s.d, seed, offset);
    }
  };
  return kernels;
}

std::tuple<at::Tensor, at::Tensor> permute_dims_glue(const at::Tensor& z,
                                                      std::optional<at::Generator> generator,
                                                      bool return_index) {
  check_permute_dims_args(z, generator);
  // The CUDA glue draws (seed, offset) from a CUDA generator; here one CPU draw is the seed.
  return permute_dims_by_sort(z, return_index, [&] {
    return emulated_shuffle_kernels(cpu_permutation_seed(generator), 0);
  });
}

// ---- mlp_critic_loss: the penalty kernel of cuda/mlp_critic_kernel.cu

template <typename T>
void penalty_rows(const T* g, T* per_row, T* G, int64_t rows, int64_t d, int64_t batch,
                  double center, double scale) {
  for (int64_t row = 0; row < rows; ++row) {
    const T* x = g + row * d;
    double sq = 0;
    for (int64_t k = 0; k < d; ++k) sq += static_cast<double>(x[k]) * static_cast<double>(x[k]);
    const double norm = std::sqrt(sq);
    per_row[row] = static_cast<T>((norm - center) * (norm - center));
    const double coef = penalty_gradient_factor(norm, center, scale, batch);
    for (int64_t k = 0; k < d; ++k) G[row * d + k] = static_cast<T>(coef * static_cast<double>(x[k]));
  }
}

const PenaltyFn& penalty_glue() {
  static const PenaltyFn penalty = penalty_on_rows(
      [](const at::Tensor& g, const at::Tensor& per_row, const at::Tensor& G, int64_t batch,
         double center, double scale) {
        const int64_t rows = per_row.numel(), d = g.size(-1);
        if (g.scalar_type() == at::kDouble) {
          penalty_rows(g.const_data_ptr<double>(), per_row.data_ptr<double>(),
                       G.data_ptr<double>(), rows, d, batch, center, scale);
        } else {
          penalty_rows(g.const_data_ptr<float>(), per_row.data_ptr<float>(), G.data_ptr<float>(),
                       rows, d, batch, center, scale);
        }
      });
  return penalty;
}

CriticLossResult mlp_critic_loss_glue(const at::Tensor& p, const at::Tensor& q,
                                      const at::Tensor& alpha, at::TensorList weights,
                                      at::TensorList biases, double w1_weight, double gp_weight,
                                      double center, bool compute_grads) {
  return mlp_critic_loss_impl(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                              compute_grads, penalty_glue());
}

CriticLossResult stacked_mlp_critic_loss_glue(const at::Tensor& p, const at::Tensor& q,
                                              const at::Tensor& alpha, at::TensorList weights,
                                              at::TensorList biases, double w1_weight,
                                              double gp_weight, double center,
                                              bool compute_grads) {
  return stacked_mlp_critic_loss_impl(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                                      compute_grads, penalty_glue());
}

// ---- the Wasserstein ops: the merge kernels of cuda/wasserstein_kernel.cu

template <typename T>
void sorted_rows_kernel(const at::Tensor& a, const at::Tensor& wa, const at::Tensor& b,
                        const at::Tensor& wb, const at::Tensor& out, const at::Tensor& grad,
                        const at::Tensor& grad_a, const at::Tensor& grad_b) {
  const int64_t R = a.size(0), n = a.size(1), m = b.size(1);
  const T* wap = wa.defined() ? wa.const_data_ptr<T>() : nullptr;
  const T* wbp = wb.defined() ? wb.const_data_ptr<T>() : nullptr;
  for (int64_t r = 0; r < R; ++r) {
    const T* rwa = wap ? wap + r * n : nullptr;
    const T* rwb = wbp ? wbp + r * m : nullptr;
    double ta = static_cast<double>(n), tb = static_cast<double>(m);
    if (rwa) { ta = 0; for (int64_t i = 0; i < n; ++i) ta += static_cast<double>(rwa[i]); }
    if (rwb) { tb = 0; for (int64_t i = 0; i < m; ++i) tb += static_cast<double>(rwb[i]); }
    out.data_ptr<T>()[r] = static_cast<T>(merge_w1<T>(
        a.const_data_ptr<T>() + r * n, rwa, n, ta, b.const_data_ptr<T>() + r * m, rwb, m, tb,
        grad_a.defined() ? grad_a.data_ptr<T>() + r * n : nullptr,
        grad_b.defined() ? grad_b.data_ptr<T>() + r * m : nullptr,
        grad.defined() ? static_cast<double>(grad.const_data_ptr<T>()[r]) : 0.0));
  }
}

template <typename T>
void segments_kernel(const at::Tensor& a, const at::Tensor& a_start, const at::Tensor& a_len,
                     const at::Tensor& b, const at::Tensor& b_start, const at::Tensor& b_len,
                     const at::Tensor& out) {
  const int64_t* as = a_start.const_data_ptr<int64_t>();
  const int64_t* al = a_len.const_data_ptr<int64_t>();
  const int64_t* bs = b_start.const_data_ptr<int64_t>();
  const int64_t* bl = b_len.const_data_ptr<int64_t>();
  for (int64_t s = 0; s < out.numel(); ++s) {
    out.data_ptr<T>()[s] = static_cast<T>(merge_w1<T>(
        a.const_data_ptr<T>() + as[s], nullptr, al[s], static_cast<double>(al[s]),
        b.const_data_ptr<T>() + bs[s], nullptr, bl[s], static_cast<double>(bl[s]), nullptr,
        nullptr, 0.0));
  }
}

const MergeKernels& emulated_merge_kernels() {
  static const MergeKernels kernels{
      [](const at::Tensor& a, const at::Tensor& wa, const at::Tensor& b, const at::Tensor& wb,
         const at::Tensor& out, const at::Tensor& grad, const at::Tensor& grad_a,
         const at::Tensor& grad_b) {
        if (a.scalar_type() == at::kDouble) {
          sorted_rows_kernel<double>(a, wa, b, wb, out, grad, grad_a, grad_b);
        } else {
          sorted_rows_kernel<float>(a, wa, b, wb, out, grad, grad_a, grad_b);
        }
      },
      [](const at::Tensor& a, const at::Tensor& a_start, const at::Tensor& a_len,
         const at::Tensor& b, const at::Tensor& b_start, const at::Tensor& b_len,
         const at::Tensor& out) {
        if (a.scalar_type() == at::kDouble) {
          segments_kernel<double>(a, a_start, a_len, b, b_start, b_len, out);
        } else {
          segments_kernel<float>(a, a_start, a_len, b, b_start, b_len, out);
        }
      }};
  return kernels;
}

at::Tensor wasserstein_1d_glue(const at::Tensor& u, const at::Tensor& v,
                               const std::optional<at::Tensor>& u_weights,
                               const std::optional<at::Tensor>& v_weights) {
  return wasserstein_1d_by_merge(u, v, u_weights, v_weights, emulated_merge_kernels());
}

std::tuple<at::Tensor, at::Tensor> wasserstein_1d_backward_glue(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
    const std::optional<at::Tensor>& u_weights, const std::optional<at::Tensor>& v_weights) {
  return wasserstein_1d_backward_by_merge(grad, u, v, u_weights, v_weights,
                                          emulated_merge_kernels());
}

at::Tensor conditional_wasserstein_glue(const at::Tensor& z, const at::Tensor& labels,
                                        const std::optional<at::Tensor>& reference,
                                        const std::optional<at::Tensor>& reference_index,
                                        int64_t num_classes, bool permuted,
                                        std::optional<at::Generator> generator,
                                        bool scale_by_range,
                                        std::optional<std::vector<at::Generator>> generators) {
  return conditional_wasserstein_by_merge(z, labels, reference, reference_index, num_classes,
                                          permuted, std::move(generator), scale_by_range,
                                          std::move(generators), emulated_merge_kernels());
}

}  // namespace

void use_device_glue_on_cpu() {
  // Kept for the life of the process: the registrations end with the Library object.
  static std::unique_ptr<torch::Library> lib;
  if (lib) return;
  lib = std::make_unique<torch::Library>(torch::Library::IMPL, "wtc_ext", c10::DispatchKey::CPU,
                                         __FILE__, __LINE__);
  lib->impl("permute_dims", &permute_dims_glue);
  lib->impl("mlp_critic_loss", &mlp_critic_loss_glue);
  lib->impl("stacked_mlp_critic_loss", &stacked_mlp_critic_loss_glue);
  lib->impl("wasserstein_1d", &wasserstein_1d_glue);
  lib->impl("wasserstein_1d_backward", &wasserstein_1d_backward_glue);
  lib->impl("conditional_wasserstein", &conditional_wasserstein_glue);
}

at::Tensor shuffle_keys_on_cpu(const at::Tensor& z, uint64_t seed, uint64_t offset) {
  TORCH_CHECK_VALUE(z.device().is_cpu() && z.dim() >= 2,
                    "shuffle_keys_on_cpu: expected a CPU z of shape (..., B, d)");
  at::Tensor keys = at::empty(z.sizes(), z.options().dtype(at::kLong));
  emulated_shuffle_kernels(seed, offset).keys(keys);
  return keys;
}

std::tuple<at::Tensor, at::Tensor> shared_shuffle_on_cpu(const at::Tensor& z_in, uint64_t seed,
                                                         uint64_t offset) {
  TORCH_CHECK_VALUE(z_in.device().is_cpu() && z_in.dim() >= 2,
                    "shared_shuffle_on_cpu: expected a CPU z of shape (..., B, d)");
  const at::Tensor z = z_in.contiguous();
  at::Tensor out = at::empty_like(z);
  at::Tensor index = at::empty(z.sizes(), z.options().dtype(at::kLong));
  emulated_shuffle_kernels(seed, offset).shared(z, out, index.data_ptr<int64_t>());
  return {out, index};
}

}  // namespace wtc
