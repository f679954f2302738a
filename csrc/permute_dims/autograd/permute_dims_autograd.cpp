// wtc_ext::permute_dims: autograd (C++, as for every op of wtc_ext: see extension.cpp).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "common/column_shuffle.h"

namespace wtc {
namespace {

// Autograd: out = z.gather(-2, index), so grad_z scatters grad_out back through the same index.
// The backward is built from differentiable ATen ops, so double backward works too.
class PermuteDimsFunction : public torch::autograd::Function<PermuteDimsFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& z,
                                                std::optional<at::Generator> generator) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, index] = permute_dims_op().call(z, std::move(generator), /*return_index=*/true);
    ctx->save_for_backward({index});
    ctx->mark_non_differentiable({index});
    return {out, index};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const at::Tensor& grad_out = grad_outputs[0];
    if (!grad_out.defined()) return {at::Tensor(), at::Tensor()};
    const at::Tensor index = ctx->get_saved_variables()[0];
    at::Tensor grad_z = at::zeros_like(grad_out, at::MemoryFormat::Contiguous)
                            .scatter(-2, index, grad_out);
    return {grad_z, at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> permute_dims_autograd(const at::Tensor& z,
                                                          std::optional<at::Generator> generator,
                                                          bool return_index) {
  if (!(at::GradMode::is_enabled() && z.requires_grad())) {
    // No graph to record: skip building the autograd node (a quarter of the op's time at B=64).
    at::AutoDispatchBelowADInplaceOrView guard;
    return permute_dims_op().call(z, std::move(generator), return_index);
  }
  // The backward needs the index, so it is always computed (and returned) here.
  auto outputs = PermuteDimsFunction::apply(z, std::move(generator));
  return {outputs[0], outputs[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, Autograd, m) { m.impl("permute_dims", &permute_dims_autograd); }

}  // namespace wtc
