// wtc_ext::mlp_critic_loss and stacked_mlp_critic_loss on ATen ops, for any device with a penalty
// kernel (the CUDA glue uses them; the CPU has its own kernel, cpu/mlp_critic_kernel.cpp). The
// algorithm is described in mlp_critic.cpp; the stacked version runs it with batched products
// (bmm/baddbmm over the runs), so a step costs the same number of launches for any R.
#include "critic/mlp_critic.h"

#include <ATen/ATen.h>

#include <vector>

namespace wtc {

CriticLossResult mlp_critic_loss_impl(const at::Tensor& p_in, const at::Tensor& q_in,
                                      const at::Tensor& alpha, at::TensorList weights,
                                      at::TensorList biases, double w1_weight, double gp_weight,
                                      double center, bool compute_grads,
                                      const PenaltyFn& penalty) {
  check_mlp_critic_loss_args(p_in, q_in, alpha, weights, biases);
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

CriticLossResult stacked_mlp_critic_loss_impl(const at::Tensor& p_in, const at::Tensor& q_in,
                                              const at::Tensor& alpha, at::TensorList weights,
                                              at::TensorList biases, double w1_weight,
                                              double gp_weight, double center, bool compute_grads,
                                              const PenaltyFn& penalty) {
  check_stacked_mlp_critic_loss_args(p_in, q_in, alpha, weights, biases);
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
  // The NaN guard of the single op, per run (see mlp_critic_aten's mlp_critic_loss_impl).
  const at::Tensor gp = per_row.mean(1) + out.narrow(1, off, B).sum(1) * 0;
  const at::Tensor loss = gp * gp_weight - w1 * w1_weight;

  std::vector<at::Tensor> grad_w, grad_b;
  if (!compute_grads) {
    return {loss, w1, gp, grad_w, grad_b, at::empty({0}, opts), at::empty({0}, opts)};
  }
  grad_w.resize(L);
  grad_b.resize(L);
  // As in the single op: Ubar_l over H_{l-1}'s x_hat rows, then grad W_l = D_l^T H_{l-1}.
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
  if (with_w1) {
    grad_p = up.narrow(1, 0, B).clone(at::MemoryFormat::Contiguous);
    grad_q = up.narrow(1, B, B).clone(at::MemoryFormat::Contiguous);
  } else {
    grad_p = at::zeros_like(p);
    grad_q = at::zeros_like(q);
  }
  return {loss, w1, gp, grad_w, grad_b, grad_p, grad_q};
}

}  // namespace wtc
