// wtc_ext::wasserstein_1d: autograd (C++, as for every op of wtc_ext: see extension.cpp).
// The backward is the op wtc_ext::wasserstein_1d_backward (the merge again, writing each
// sample's derivative); u and v are differentiable, the weights are not.
// conditional_wasserstein has no gradient, so no autograd kernel.
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

at::Tensor wasserstein_1d_autograd(const at::Tensor& u, const at::Tensor& v,
                                   const std::optional<at::Tensor>& u_weights,
                                   const std::optional<at::Tensor>& v_weights) {
  return Wasserstein1dFunction::apply(u, v, u_weights, v_weights)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, Autograd, m) { m.impl("wasserstein_1d", &wasserstein_1d_autograd); }

}  // namespace wtc
