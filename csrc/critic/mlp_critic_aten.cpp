// wtc_ext::mlp_critic_loss and stacked_mlp_critic_loss on ATen ops, for any device with a penalty
// kernel (the CUDA glue uses them, and testing/ runs them on the CPU; the CPU has its own kernel,
// cpu/mlp_critic_kernel.cpp). The algorithm is described in mlp_critic.cpp. It runs with batched
// products (bmm/baddbmm over the runs), so a step costs the same number of launches for any R,
// and one critic is a stack of one.
#include "critic/mlp_critic.h"

#include <ATen/ATen.h>

#include <tuple>
#include <utility>
#include <vector>

namespace wtc {

PenaltyFn penalty_on_rows(PenaltyRowsKernel kernel) {
  return [kernel = std::move(kernel)](const at::Tensor& g_in, double center, double scale) {
    const at::Tensor g = g_in.contiguous();
    // per_row holds every row, also for d = 0 (each row's norm is then 0).
    at::Tensor per_row = at::empty(g.sizes().slice(0, g.dim() - 1), g.options());
    at::Tensor G = at::empty_like(g, at::MemoryFormat::Contiguous);
    kernel(g, per_row, G, g.size(-2), center, scale);
    return std::make_tuple(per_row, G);
  };
}

namespace {

// The algorithm for checked arguments of the stacked op's shapes.
CriticLossResult stacked_critic_loss(const at::Tensor& p_in, const at::Tensor& q_in,
                                     const at::Tensor& alpha, at::TensorList weights,
                                     at::TensorList biases, double w1_weight, double gp_weight,
                                     double center, bool compute_grads, const PenaltyFn& penalty);

}  // namespace

// One critic is a stack of one: the same products with a batch of 1.
CriticLossResult mlp_critic_loss_impl(const at::Tensor& p, const at::Tensor& q,
                                      const at::Tensor& alpha, at::TensorList weights,
                                      at::TensorList biases, double w1_weight, double gp_weight,
                                      double center, bool compute_grads,
                                      const PenaltyFn& penalty) {
  check_mlp_critic_loss_args(p, q, alpha, weights, biases);
  auto lead = [](at::TensorList ts) {
    std::vector<at::Tensor> out;
    out.reserve(ts.size());
    for (const at::Tensor& t : ts) out.push_back(t.unsqueeze(0));
    return out;
  };
  auto drop = [](std::vector<at::Tensor> ts) {
    for (at::Tensor& t : ts) t = t.squeeze(0);
    return ts;
  };
  auto [loss, w1, gp, grad_w, grad_b, grad_p, grad_q] = stacked_critic_loss(
      p.unsqueeze(0), q.unsqueeze(0), alpha.reshape({1, p.size(0)}), lead(weights), lead(biases),
      w1_weight, gp_weight, center, compute_grads, penalty);
  if (!compute_grads) {  // grad_p and grad_q are empty
    return {loss.squeeze(0), w1.squeeze(0), gp.squeeze(0), grad_w, grad_b, grad_p, grad_q};
  }
  return {loss.squeeze(0), w1.squeeze(0),      gp.squeeze(0),      drop(grad_w),
          drop(grad_b),    grad_p.squeeze(0), grad_q.squeeze(0)};
}

CriticLossResult stacked_mlp_critic_loss_impl(const at::Tensor& p, const at::Tensor& q,
                                              const at::Tensor& alpha, at::TensorList weights,
                                              at::TensorList biases, double w1_weight,
                                              double gp_weight, double center, bool compute_grads,
                                              const PenaltyFn& penalty) {
  check_stacked_mlp_critic_loss_args(p, q, alpha, weights, biases);
  return stacked_critic_loss(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                             compute_grads, penalty);
}

namespace {

CriticLossResult stacked_critic_loss(const at::Tensor& p_in, const at::Tensor& q_in,
                                     const at::Tensor& alpha, at::TensorList weights,
                                     at::TensorList biases, double w1_weight, double gp_weight,
                                     double center, bool compute_grads, const PenaltyFn& penalty) {
  const at::Tensor p = p_in.contiguous();
  const at::Tensor q = q_in.contiguous();
  const int64_t R = p.size(0), B = p.size(1);
  const int64_t L = static_cast<int64_t>(weights.size());
  const bool with_w1 = w1_weight != 0.0;
  const auto opts = p.options();

  // Each run's rows: [p; q; x_hat] when the W1 term is on, else x_hat alone: x is (R, n, d).
  const at::Tensor x_hat = at::lerp(q, p, alpha.unsqueeze(-1));
  const at::Tensor x = with_w1 ? at::cat({p, q, x_hat}, 1) : x_hat;
  const int64_t n = x.size(1);
  const int64_t off = with_w1 ? 2 * B : 0;  // first x_hat row of a run

  // Forward: H[0] = x, H[l] = relu(A_l), one batched product per layer for all runs.
  std::vector<at::Tensor> H(L);
  H[0] = x;
  for (int64_t l = 1; l < L; ++l) {
    H[l] = at::baddbmm(biases[l - 1].unsqueeze(1), H[l - 1], weights[l - 1].transpose(1, 2))
               .relu_();
  }
  const at::Tensor out =
      at::baddbmm(biases[L - 1].unsqueeze(1), H[L - 1], weights[L - 1].transpose(1, 2))
          .view({R, n});
  const at::Tensor w1 = with_w1 ? (out.narrow(1, 0, B).sum(1) - out.narrow(1, B, B).sum(1)) /
                                      static_cast<double>(B)
                                : at::zeros({R}, opts);

  // One backward sweep with per-row seeds (the same for every run).
  at::Tensor seeds = at::ones({n}, opts);
  if (with_w1) {
    seeds.narrow(0, 0, B).fill_(-w1_weight / static_cast<double>(B));
    seeds.narrow(0, B, B).fill_(w1_weight / static_cast<double>(B));
  }
  std::vector<at::Tensor> D(L);
  at::Tensor up = seeds.view({1, n, 1}) * weights[L - 1];  // (R, n, width of layer L's input)
  for (int64_t l = L - 1; l >= 1; --l) {
    D[l] = at::threshold_backward(up, H[l], 0);
    up = at::bmm(D[l], weights[l - 1]);
  }
  const at::Tensor g = up.narrow(1, off, B);  // (R, B, d): the input gradients at x_hat
  auto [per_row, G] = penalty(g, center, gp_weight);
  // A non-finite input can leave g finite (a NaN fails every ReLU mask); the contract is a NaN
  // result, so each run folds its critic's outputs in: 0 * x is 0 for finite x, else NaN.
  const at::Tensor gp = per_row.mean(1) + out.narrow(1, off, B).sum(1) * 0;
  const at::Tensor loss = gp * gp_weight - w1 * w1_weight;

  std::vector<at::Tensor> grad_w, grad_b;
  if (!compute_grads) {
    return {loss, w1, gp, grad_w, grad_b, at::empty({0}, opts), at::empty({0}, opts)};
  }
  grad_w.resize(L);
  grad_b.resize(L);
  // Each weight's gradient is one product over all rows: the W1 term's rows [p; q] pair D_l
  // with the layer's input H_{l-1}, the x_hat rows pair V_l (D_l's x_hat rows) with the
  // penalty chain's Ubar_l. So Ubar_l is written over H_{l-1}'s x_hat rows (no longer needed:
  // their masks were used) and grad W_l = D_l^T H_{l-1}, one batched product per layer.
  at::Tensor ubar = G;
  for (int64_t l = 1; l <= L; ++l) {
    H[l - 1].narrow(1, off, B).copy_(ubar);
    if (l < L) {
      ubar = at::threshold_backward(at::bmm(ubar, weights[l - 1].transpose(1, 2)),
                                    H[l].narrow(1, off, B), 0);
      grad_w[l - 1] = at::bmm(D[l].transpose(1, 2), H[l - 1]);
      grad_b[l - 1] = with_w1 ? D[l].narrow(1, 0, 2 * B).sum(1) : at::zeros_like(biases[l - 1]);
    } else {  // the last layer: seeds are D_L (1 on the x_hat rows)
      grad_w[L - 1] = at::bmm(seeds.view({1, 1, n}).expand({R, 1, n}), H[L - 1]);
      grad_b[L - 1] = with_w1 ? seeds.narrow(0, 0, 2 * B).sum().reshape({1, 1}).expand({R, 1})
                                    .contiguous()
                              : at::zeros_like(biases[L - 1]);
    }
  }
  at::Tensor grad_p, grad_q;
  if (with_w1) {  // (copies: outputs must not alias one another)
    grad_p = up.narrow(1, 0, B).clone(at::MemoryFormat::Contiguous);
    grad_q = up.narrow(1, B, B).clone(at::MemoryFormat::Contiguous);
  } else {
    // The penalty depends on real and fake only through the masks: zero almost everywhere.
    grad_p = at::zeros_like(p);
    grad_q = at::zeros_like(q);
  }
  return {loss, w1, gp, grad_w, grad_b, grad_p, grad_q};
}

}  // namespace
}  // namespace wtc
