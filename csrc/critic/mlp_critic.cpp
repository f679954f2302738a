// wtc_ext::mlp_critic_loss: schema and argument checks. The algorithm is in mlp_critic_aten.cpp
// (ATen ops, for the CUDA glue) and cpu/mlp_critic_kernel.cpp (the CPU kernel); the autograd in
// autograd/.
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
//
// wtc_ext::stacked_mlp_critic_loss is that objective for R critics with parameters of their own
// (R runs of one model trained side by side): every tensor gets a leading run dim, every output
// is per run, and runs never mix (a NaN in one run stays in that run's outputs).
#include "critic/mlp_critic.h"

#include <ATen/ATen.h>
#include <torch/library.h>

namespace wtc {

void check_mlp_critic_loss_args(const at::Tensor& p, const at::Tensor& q, const at::Tensor& alpha,
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

void check_stacked_mlp_critic_loss_args(const at::Tensor& p, const at::Tensor& q,
                                        const at::Tensor& alpha, at::TensorList weights,
                                        at::TensorList biases) {
  constexpr const char* op = "stacked_mlp_critic_loss: ";
  TORCH_CHECK_VALUE(p.dim() == 3, op, "expected p (real) of shape (R, B, d), got ", p.sizes());
  TORCH_CHECK_VALUE(p.size(0) > 0, op, "expected at least one run in p (real), got ", p.sizes());
  TORCH_CHECK_VALUE(p.size(1) > 0, op, "expected at least one row per run in p (real) and q "
                    "(fake), got ", p.sizes());
  TORCH_CHECK_VALUE(q.sizes() == p.sizes(), op, "p (real) and q (fake) must have the same "
                    "shape, got ", p.sizes(), " and ", q.sizes());
  TORCH_CHECK_VALUE(q.device() == p.device() && q.scalar_type() == p.scalar_type(), op,
                    "p (real) and q (fake) must share device and dtype, got ", p.device(), "/",
                    p.scalar_type(), " and ", q.device(), "/", q.scalar_type());
  TORCH_CHECK_VALUE(p.scalar_type() == at::kFloat || p.scalar_type() == at::kDouble, op,
                    "expected float32 or float64 p (real) and q (fake), got ", p.scalar_type());
  const int64_t R = p.size(0), B = p.size(1);
  TORCH_CHECK_VALUE(alpha.dim() == 2 && alpha.size(0) == R && alpha.size(1) == B, op,
                    "expected alpha of shape (R, B) = (", R, ", ", B, "), got ", alpha.sizes());
  TORCH_CHECK_VALUE(alpha.device() == p.device() && alpha.scalar_type() == p.scalar_type(), op,
                    "expected alpha on ", p.device(), " with dtype ", p.scalar_type(), ", got ",
                    alpha.device(), "/", alpha.scalar_type());
  TORCH_CHECK_VALUE(!weights.empty() && weights.size() == biases.size(), op,
                    "expected as many biases as weights (at least one), got ", weights.size(),
                    " weights and ", biases.size(), " biases");
  int64_t width = p.size(2);
  for (size_t l = 0; l < weights.size(); ++l) {
    const at::Tensor& w = weights[l];
    const at::Tensor& b = biases[l];
    TORCH_CHECK_VALUE(w.dim() == 3 && w.size(0) == R && w.size(2) == width, op, "weights[", l,
                      "] must have shape (R, out, in) = (", R, ", out, ", width, ") for p (real) "
                      "of shape ", p.sizes(), ", got ", w.sizes());
    TORCH_CHECK_VALUE(b.dim() == 2 && b.size(0) == R && b.size(1) == w.size(1), op, "biases[", l,
                      "] must have shape (", R, ", ", w.size(1), "), got ", b.sizes());
    TORCH_CHECK_VALUE(w.device() == p.device() && w.scalar_type() == p.scalar_type(), op,
                      "weights[", l, "] must be on ", p.device(), " with dtype ",
                      p.scalar_type(), ", got ", w.device(), "/", w.scalar_type());
    TORCH_CHECK_VALUE(b.device() == p.device() && b.scalar_type() == p.scalar_type(), op,
                      "biases[", l, "] must be on ", p.device(), " with dtype ", p.scalar_type(),
                      ", got ", b.device(), "/", b.scalar_type());
    width = w.size(1);
  }
  TORCH_CHECK_VALUE(width == 1, op, "the last layer (weights[", weights.size() - 1,
                    "]) must have one output, got ", width);
}

const c10::TypedOperatorHandle<MlpCriticLossSignature>& stacked_mlp_critic_loss_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wtc_ext::stacked_mlp_critic_loss", "")
                             .typed<MlpCriticLossSignature>();
  return op;
}

const c10::TypedOperatorHandle<MlpCriticLossSignature>& mlp_critic_loss_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wtc_ext::mlp_critic_loss", "")
                             .typed<MlpCriticLossSignature>();
  return op;
}

TORCH_LIBRARY_FRAGMENT(wtc_ext, m) {
  m.def(
      "mlp_critic_loss(Tensor p, Tensor q, Tensor alpha, Tensor[] weights, Tensor[] biases, "
      "float w1_weight, float gp_weight, float center, bool compute_grads) -> (Tensor loss, "
      "Tensor w1, Tensor gp, Tensor[] grad_weights, Tensor[] grad_biases, Tensor grad_p, "
      "Tensor grad_q)");
  // R critics at once: p, q (R, B, d), alpha (R, B), weights[l] (R, out, in), biases[l] (R, out);
  // loss, w1, gp (R) and the gradients with the parameters' and inputs' shapes.
  m.def(
      "stacked_mlp_critic_loss(Tensor p, Tensor q, Tensor alpha, Tensor[] weights, "
      "Tensor[] biases, float w1_weight, float gp_weight, float center, bool compute_grads) -> "
      "(Tensor loss, Tensor w1, Tensor gp, Tensor[] grad_weights, Tensor[] grad_biases, "
      "Tensor grad_p, Tensor grad_q)");
}

}  // namespace wtc
