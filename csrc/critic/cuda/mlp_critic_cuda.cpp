// wtc_ext::mlp_critic_loss and stacked_mlp_critic_loss on CUDA: the ATen algorithms of
// critic/mlp_critic_aten.cpp (cuBLAS matmuls, batched over the runs for the stacked op) with the
// fused penalty kernel, on the current stream.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "critic/mlp_critic.h"
#include "critic/cuda/mlp_critic_cuda.h"

namespace wtc {
namespace {

const PenaltyFn& penalty_cuda() {
  static const PenaltyFn penalty = penalty_on_rows(
      [](const at::Tensor& g, const at::Tensor& per_row, const at::Tensor& G, int64_t batch,
         double center, double scale) {
        C10_CUDA_CHECK(launch_penalty_rows(g.const_data_ptr(), per_row.data_ptr(), G.data_ptr(),
                                           per_row.numel(), g.size(-1), batch, center, scale,
                                           g.scalar_type() == at::kDouble,
                                           at::cuda::getCurrentCUDAStream()));
      });
  return penalty;
}

CriticLossResult mlp_critic_loss_cuda(const at::Tensor& p, const at::Tensor& q,
                                      const at::Tensor& alpha, at::TensorList weights,
                                      at::TensorList biases, double w1_weight, double gp_weight,
                                      double center, bool compute_grads) {
  const c10::cuda::CUDAGuard guard(p.device());
  return mlp_critic_loss_impl(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                              compute_grads, penalty_cuda());
}

CriticLossResult stacked_mlp_critic_loss_cuda(const at::Tensor& p, const at::Tensor& q,
                                              const at::Tensor& alpha, at::TensorList weights,
                                              at::TensorList biases, double w1_weight,
                                              double gp_weight, double center,
                                              bool compute_grads) {
  const c10::cuda::CUDAGuard guard(p.device());
  return stacked_mlp_critic_loss_impl(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                                      compute_grads, penalty_cuda());
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, CUDA, m) {
  m.impl("mlp_critic_loss", &mlp_critic_loss_cuda);
  m.impl("stacked_mlp_critic_loss", &stacked_mlp_critic_loss_cuda);
}

}  // namespace wtc
