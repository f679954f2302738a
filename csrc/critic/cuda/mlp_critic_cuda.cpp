// wtc_ext::mlp_critic_loss on CUDA: the ATen algorithm of critic/mlp_critic_aten.cpp (cuBLAS
// matmuls) with the fused penalty kernel, on the current stream.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "critic/mlp_critic.h"
#include "critic/cuda/mlp_critic_cuda.h"

namespace wtc {
namespace {

std::tuple<at::Tensor, at::Tensor> penalty_cuda(const at::Tensor& g_in, double center,
                                                double scale) {
  const at::Tensor g = g_in.contiguous();
  const int64_t B = g.size(0), d = g.size(1);
  at::Tensor per_row = at::empty({B}, g.options());
  at::Tensor G = at::empty_like(g);
  C10_CUDA_CHECK(launch_penalty_rows(g.const_data_ptr(), per_row.data_ptr(), G.data_ptr(), B, d,
                                     center, scale, g.scalar_type() == at::kDouble,
                                     at::cuda::getCurrentCUDAStream()));
  return {per_row, G};
}

CriticLossResult mlp_critic_loss_cuda(const at::Tensor& p, const at::Tensor& q,
                                      const at::Tensor& alpha, at::TensorList weights,
                                      at::TensorList biases, double w1_weight, double gp_weight,
                                      double center, bool compute_grads) {
  const c10::cuda::CUDAGuard guard(p.device());
  return mlp_critic_loss_impl(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                              compute_grads, penalty_cuda);
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, CUDA, m) { m.impl("mlp_critic_loss", &mlp_critic_loss_cuda); }

}  // namespace wtc
