// wtc_ext::mlp_critic_loss: the WGAN-GP critic objective of a Linear/ReLU MLP critic with every
// parameter gradient in closed form (ReLU'' = 0, so no double backward is needed).
// wtc_ext::stacked_mlp_critic_loss: the same for R independent critics (R runs stacked along a
// leading dim of every input, parameter and output) in one call.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <functional>
#include <tuple>
#include <vector>

namespace wtc {

using CriticLossResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, std::vector<at::Tensor>,
                                    std::vector<at::Tensor>, at::Tensor, at::Tensor>;

// Validates the op's arguments; raises ValueError naming the argument.
void check_mlp_critic_loss_args(const at::Tensor& p, const at::Tensor& q, const at::Tensor& alpha,
                                at::TensorList weights, at::TensorList biases);

// The same for the stacked op: p, q (R, B, d), alpha (R, B), weights[l] (R, out, in), biases[l]
// (R, out).
void check_stacked_mlp_critic_loss_args(const at::Tensor& p, const at::Tensor& q,
                                        const at::Tensor& alpha, at::TensorList weights,
                                        at::TensorList biases);

// The registered ops, for calls from C++ (their autograd). Both have the same signature.
using MlpCriticLossSignature = CriticLossResult(const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, at::TensorList, at::TensorList,
                                                double, double, double, bool);
const c10::TypedOperatorHandle<MlpCriticLossSignature>& mlp_critic_loss_op();
const c10::TypedOperatorHandle<MlpCriticLossSignature>& stacked_mlp_critic_loss_op();

// penalty(g, center, scale), g of shape (..., B, d) -> (per-row (||g_b|| - center)^2 of shape
// (..., B), G = scale * d/dg mean_b (||g_b|| - center)^2 of g's shape): the mean is over B, each
// leading index (a run of the stacked op) on its own. Rows with ||g_b|| = 0 get a zero gradient,
// as autograd's norm does.
using PenaltyFn = std::function<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, double)>;

// A device's penalty kernel (penalty_row.h, a row at a time): per_row (rows) and G (rows, d) from
// g (rows, d), all contiguous, each row's mean taken over `batch` rows.
using PenaltyRowsKernel = std::function<void(const at::Tensor& g, const at::Tensor& per_row,
                                             const at::Tensor& G, int64_t batch, double center,
                                             double scale)>;

// The PenaltyFn that runs kernel on g (..., B, d): every leading index's B rows in one call.
PenaltyFn penalty_on_rows(PenaltyRowsKernel kernel);

// The algorithm on ATen ops, for any device with a penalty kernel (the CPU has its own kernel):
// the single op runs the stacked one on a stack of one.
CriticLossResult mlp_critic_loss_impl(const at::Tensor& p, const at::Tensor& q,
                                      const at::Tensor& alpha, at::TensorList weights,
                                      at::TensorList biases, double w1_weight, double gp_weight,
                                      double center, bool compute_grads,
                                      const PenaltyFn& penalty);

// The stacked op's algorithm on ATen ops (batched products, one per layer and step for all runs).
CriticLossResult stacked_mlp_critic_loss_impl(const at::Tensor& p, const at::Tensor& q,
                                              const at::Tensor& alpha, at::TensorList weights,
                                              at::TensorList biases, double w1_weight,
                                              double gp_weight, double center, bool compute_grads,
                                              const PenaltyFn& penalty);

}  // namespace wtc
