// wtc_ext::wasserstein_1d: autograd (C++, as for every op of wtc_ext: see extension.cpp).
// The backward is the op wtc_ext::wasserstein_1d_backward (the merge again, writing each
// sample's derivative); u and v are differentiable, the weights are not.
// wasserstein_1d_backward has one too, for double backward. conditional_wasserstein has no
// gradient, so no autograd kernel.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

namespace wtc {
namespace {

using Wasserstein1dSignature = at::Tensor(const at::Tensor&, const at::Tensor&,
                                          const std::optional<at::Tensor>&,
                                          const std::optional<at::Tensor>&);
using Wasserstein1dBackwardSignature = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&);

const c10::TypedOperatorHandle<Wasserstein1dSignature>& wasserstein_1d_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wtc_ext::wasserstein_1d", "")
                             .typed<Wasserstein1dSignature>();
  return op;
}

const c10::TypedOperatorHandle<Wasserstein1dBackwardSignature>& wasserstein_1d_backward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wtc_ext::wasserstein_1d_backward", "")
                             .typed<Wasserstein1dBackwardSignature>();
  return op;
}

std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

class Wasserstein1dFunction : public torch::autograd::Function<Wasserstein1dFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& u, const at::Tensor& v,
                                                const std::optional<at::Tensor>& u_weights,
                                                const std::optional<at::Tensor>& v_weights) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({u, v, u_weights.value_or(at::Tensor()),
                            v_weights.value_or(at::Tensor())});
    return {wasserstein_1d_op().call(u, v, u_weights, v_weights)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    auto [grad_u, grad_v] = wasserstein_1d_backward_op().call(
        grad_outputs[0], saved[0], saved[1], optional_of(saved[2]), optional_of(saved[3]));
    return {grad_u, grad_v, at::Tensor(), at::Tensor()};
  }
};

// The backward (grad_u, grad_v) = grad[r] * S(u, v), S piecewise constant in u and v (it depends
// only on the samples' order): its derivative in u and v is zero almost everywhere, and in grad it
// is S, the backward at grad = 1. So double backward (create_graph=True, gradients of gradients)
// is exact without a kernel of its own, and is again differentiable the same way.
class Wasserstein1dBackwardFunction
    : public torch::autograd::Function<Wasserstein1dBackwardFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& grad, const at::Tensor& u,
                                                const at::Tensor& v,
                                                const std::optional<at::Tensor>& u_weights,
                                                const std::optional<at::Tensor>& v_weights) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({u, v, u_weights.value_or(at::Tensor()),
                            v_weights.value_or(at::Tensor())});
    auto [grad_u, grad_v] = wasserstein_1d_backward_op().call(grad, u, v, u_weights, v_weights);
    return {grad_u, grad_v};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& u = saved[0];
    const at::Tensor& v = saved[1];
    // S through the op's own Autograd kernel, so a third derivative works the same way.
    auto [s_u, s_v] = wasserstein_1d_backward_op().call(
        at::ones({u.size(0)}, u.options().requires_grad(false)), u, v, optional_of(saved[2]),
        optional_of(saved[3]));
    at::Tensor grad_grad = at::zeros({u.size(0)}, u.options().requires_grad(false));
    if (grad_outputs[0].defined()) grad_grad = grad_grad + (grad_outputs[0] * s_u).sum(-1);
    if (grad_outputs[1].defined()) grad_grad = grad_grad + (grad_outputs[1] * s_v).sum(-1);
    return {grad_grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> wasserstein_1d_backward_autograd(
    const at::Tensor& grad, const at::Tensor& u, const at::Tensor& v,
    const std::optional<at::Tensor>& u_weights, const std::optional<at::Tensor>& v_weights) {
  const auto out = Wasserstein1dBackwardFunction::apply(grad, u, v, u_weights, v_weights);
  return {out[0], out[1]};
}

at::Tensor wasserstein_1d_autograd(const at::Tensor& u, const at::Tensor& v,
                                   const std::optional<at::Tensor>& u_weights,
                                   const std::optional<at::Tensor>& v_weights) {
  return Wasserstein1dFunction::apply(u, v, u_weights, v_weights)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, Autograd, m) {
  m.impl("wasserstein_1d", &wasserstein_1d_autograd);
  m.impl("wasserstein_1d_backward", &wasserstein_1d_backward_autograd);
}

}  // namespace wtc
