// wtc_ext::mlp_critic_loss and stacked_mlp_critic_loss: autograd (C++, as for every op of wtc_ext:
// see extension.cpp). One Function serves both: the stacked op's loss is per run (R), and each
// run's gradients are scaled by that run's incoming gradient.
#include "critic/mlp_critic.h"

#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include <vector>

namespace wtc {
namespace {

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
                                                double gp_weight, double center, bool stacked,
                                                std::vector<at::Tensor>* grads_out) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);  // no zero tensors for the outputs nobody differentiates
    const auto& op = stacked ? stacked_mlp_critic_loss_op() : mlp_critic_loss_op();
    auto [loss, w1, gp, grad_w, grad_b, grad_p, grad_q] = op.call(
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
    ctx->saved_data["stacked"] = stacked;
    ctx->mark_non_differentiable({w1, gp});
    *grads_out = std::move(grads);
    return {loss, w1, gp};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const int64_t L = ctx->saved_data["layers"].toInt();
    const bool stacked = ctx->saved_data["stacked"].toBool();
    // p, q, alpha, L weights, L biases, three floats, stacked, the gradients' destination
    torch::autograd::variable_list result(3 + 2 * L + 5);
    const at::Tensor& grad_loss = grad_outputs[0];
    if (!grad_loss.defined()) return result;
    // The gradients are closed-form constants without history: a graph of them (create_graph)
    // would give silently wrong second derivatives, so refuse it here, where it is known.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "wtc_ext critic_loss / gradient_penalty: the fused Linear/ReLU critic path does not "
                "support create_graph=True (gradients of its gradients); call backward without "
                "create_graph, or compute the loss with wtc_ext.reference (autograd)");
    auto it = ctx->saved_data.find("grads");
    // Only a backward that frees the graph takes the gradients, so this cannot fail in a
    // backward that PyTorch itself would allow.
    TORCH_CHECK(it != ctx->saved_data.end(),
                "wtc_ext critic loss: backward ran a second time through a freed graph; pass "
                "retain_graph=True to the first backward");
    std::vector<at::Tensor> scaled = it->second.toTensorVector();
    // A backward that frees the graph takes the gradients with it, whatever its seed, so that a
    // second backward through the freed graph fails (above) instead of adding them again.
    const bool keep_graph = torch::autograd::get_current_graph_task_keep_graph();
    if (!keep_graph) ctx->saved_data.erase(it);
    // loss.backward() seeds 1. On a CPU that is free to check, and when this backward frees the
    // graph the gradients are handed over as they are (AccumulateGrad takes a tensor nobody else
    // holds without copying it); scaling or copying them costs a tenth of the op at batch 64.
    // (Not under tracing: fake and functional tensors have no value to read.) A kept graph
    // still holds them, so it gets new tensors.
    const bool plain_cpu =
        grad_loss.device().is_cpu() &&
        !grad_loss.key_set().has_any(c10::DispatchKeySet(
            {c10::DispatchKey::Python, c10::DispatchKey::Functionalize}));
    // (The stacked op's loss.sum().backward() seeds 1 for every run.)
    const bool ones = plain_cpu && (stacked ? grad_loss.eq(1).all().item<bool>()
                                            : grad_loss.numel() == 1 &&
                                                  grad_loss.item<double>() == 1.0);
    if (keep_graph || !ones) {
      if (!stacked) {
        scaled = at::_foreach_mul(scaled, grad_loss);
      } else {
        // Run r's gradients times grad_loss[r]: the leading dim of every gradient is the run.
        for (at::Tensor& t : scaled) {
          std::vector<int64_t> shape(t.dim(), 1);
          shape[0] = grad_loss.size(0);
          t = t * grad_loss.reshape(shape);
        }
      }
    }
    for (int64_t l = 0; l < 2 * L; ++l) result[3 + l] = std::move(scaled[l]);
    result[0] = std::move(scaled[2 * L]);
    result[1] = std::move(scaled[2 * L + 1]);
    return result;
  }
};

template <bool stacked>
CriticLossResult mlp_critic_loss_autograd(const at::Tensor& p, const at::Tensor& q,
                                          const at::Tensor& alpha, at::TensorList weights,
                                          at::TensorList biases, double w1_weight,
                                          double gp_weight, double center, bool compute_grads) {
  bool needs_grad = p.requires_grad() || q.requires_grad();
  for (const auto& t : weights) needs_grad = needs_grad || t.requires_grad();
  for (const auto& t : biases) needs_grad = needs_grad || t.requires_grad();
  if (!(compute_grads && needs_grad && at::GradMode::is_enabled())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    const auto& op = stacked ? stacked_mlp_critic_loss_op() : mlp_critic_loss_op();
    return op.call(p, q, alpha, weights, biases, w1_weight, gp_weight, center, compute_grads);
  }
  std::vector<at::Tensor> grads;
  const auto out = MlpCriticLossFunction::apply(p, q, alpha, weights, biases, w1_weight,
                                                gp_weight, center, stacked, &grads);
  const int64_t L = static_cast<int64_t>(weights.size());
  std::vector<at::Tensor> grad_w(grads.begin(), grads.begin() + L);
  std::vector<at::Tensor> grad_b(grads.begin() + L, grads.begin() + 2 * L);
  return {out[0], out[1], out[2], grad_w, grad_b, grads[2 * L], grads[2 * L + 1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, Autograd, m) {
  m.impl("mlp_critic_loss", &mlp_critic_loss_autograd<false>);
  m.impl("stacked_mlp_critic_loss", &mlp_critic_loss_autograd<true>);
}

}  // namespace wtc
