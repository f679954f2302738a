// wtc_ext::mlp_critic_loss: schema, the device-generic algorithm, and the CPU penalty kernel.
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
#include "critic/mlp_critic.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include <cmath>

namespace wtc {
namespace {

void check_args(const at::Tensor& p, const at::Tensor& q, const at::Tensor& alpha,
                at::TensorList weights, at::TensorList biases) {
  TORCH_CHECK_VALUE(p.dim() == 2, "mlp_critic_loss: expected real of shape (B, d), got ",
                    p.sizes());
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

}  // namespace

CriticLossResult mlp_critic_loss_impl(const at::Tensor& p_in, const at::Tensor& q_in,
                                      const at::Tensor& alpha, at::TensorList weights,
                                      at::TensorList biases, double w1_weight, double gp_weight,
                                      double center, bool compute_grads, const PenaltyFn& penalty,
                                      int64_t batch_total) {
  check_args(p_in, q_in, alpha, weights, biases);
  const at::Tensor p = p_in.contiguous();
  const at::Tensor q = q_in.contiguous();
  const int64_t B = p.size(0);
  // A chunk of rows contributes its share of the batch means: scale by B / batch_total.
  if (batch_total <= 0) batch_total = B;
  const double share = static_cast<double>(B) / static_cast<double>(batch_total);
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
                                      static_cast<double>(batch_total)
                                : at::zeros({}, opts);

  // One backward sweep with per-row seeds: D[l] = d(seeded output)/dA_l.
  at::Tensor seeds = at::ones({n}, opts);
  if (with_w1) {
    seeds.narrow(0, 0, B).fill_(-w1_weight / static_cast<double>(batch_total));
    seeds.narrow(0, B, B).fill_(w1_weight / static_cast<double>(batch_total));
  }
  std::vector<at::Tensor> D(L);
  at::Tensor up = seeds.unsqueeze(1) * weights[L - 1];  // (n, width of layer L's input)
  for (int64_t l = L - 1; l >= 1; --l) {
    D[l] = at::threshold_backward(up, H[l], 0);
    up = at::mm(D[l], weights[l - 1]);
  }
  // up's x_hat rows are the critic's input gradients; its p and q rows the W1 term's.
  const at::Tensor g = up.narrow(0, off, B);
  // The penalty averages over its own rows: share rescales that to the whole batch.
  auto [per_row, G] = penalty(g, center, gp_weight * share);
  at::Tensor gp = per_row.sum() / static_cast<double>(batch_total);
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

namespace {

template <typename scalar_t>
void penalty_rows_cpu(const scalar_t* g, scalar_t* per_row, scalar_t* G, int64_t B, int64_t d,
                      double center, double scale) {
  at::parallel_for(0, B, std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* row = g + b * d;
      double sq = 0;
      for (int64_t k = 0; k < d; ++k) sq += static_cast<double>(row[k]) * row[k];
      const double norm = std::sqrt(sq);
      const double r = norm - center;
      per_row[b] = static_cast<scalar_t>(r * r);
      const double coef = norm > 0 ? scale * 2.0 * r / (static_cast<double>(B) * norm) : 0.0;
      for (int64_t k = 0; k < d; ++k) G[b * d + k] = static_cast<scalar_t>(coef * row[k]);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> penalty_cpu(const at::Tensor& g_in, double center,
                                               double scale) {
  const at::Tensor g = g_in.contiguous();
  const int64_t B = g.size(0), d = g.size(1);
  at::Tensor per_row = at::empty({B}, g.options());
  at::Tensor G = at::empty_like(g);
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "mlp_critic_penalty_cpu", [&] {
    penalty_rows_cpu<scalar_t>(g.const_data_ptr<scalar_t>(), per_row.data_ptr<scalar_t>(),
                               G.data_ptr<scalar_t>(), B, d, center, scale);
  });
  return {per_row, G};
}

// Row chunks run side by side on a CPU, one per thread, each through the whole algorithm with
// single-threaded matrix products, and their additive shares are summed. At batch 64 a product
// split over two threads reaches about 60% of the rate of two independent single-threaded ones
// (by `torch.mm` timings of the critic's shapes), and the elementwise work between the products
// runs in parallel too.
constexpr int64_t kMinChunkRows = 16;

CriticLossResult mlp_critic_loss_cpu(const at::Tensor& p, const at::Tensor& q,
                                     const at::Tensor& alpha, at::TensorList weights,
                                     at::TensorList biases, double w1_weight, double gp_weight,
                                     double center, bool compute_grads) {
  check_args(p, q, alpha, weights, biases);
  const int64_t B = p.size(0);
  const int64_t chunks = at::in_parallel_region()
                             ? 1
                             : std::min<int64_t>(at::get_num_threads(), B / kMinChunkRows);
  if (chunks <= 1) {
    return mlp_critic_loss_impl(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                                compute_grads, penalty_cpu);
  }
  const at::Tensor alpha_rows = alpha.reshape({B});
  std::vector<CriticLossResult> parts(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView guard;  // worker threads: no autograd recording
    for (int64_t c = begin; c < end; ++c) {
      const int64_t lo = B * c / chunks, rows = B * (c + 1) / chunks - lo;
      parts[c] = mlp_critic_loss_impl(p.narrow(0, lo, rows), q.narrow(0, lo, rows),
                                      alpha_rows.narrow(0, lo, rows), weights, biases, w1_weight,
                                      gp_weight, center, compute_grads, penalty_cpu, B);
    }
  });
  auto& [loss, w1, gp, grad_w, grad_b, grad_p, grad_q] = parts[0];
  std::vector<at::Tensor> rows_p{grad_p}, rows_q{grad_q};
  for (int64_t c = 1; c < chunks; ++c) {
    const auto& [c_loss, c_w1, c_gp, c_grad_w, c_grad_b, c_grad_p, c_grad_q] = parts[c];
    loss.add_(c_loss);
    w1.add_(c_w1);
    gp.add_(c_gp);
    for (size_t l = 0; l < grad_w.size(); ++l) {
      grad_w[l].add_(c_grad_w[l]);
      grad_b[l].add_(c_grad_b[l]);
    }
    rows_p.push_back(c_grad_p);
    rows_q.push_back(c_grad_q);
  }
  if (compute_grads) {
    grad_p = at::cat(rows_p, 0);
    grad_q = at::cat(rows_q, 0);
  }
  return parts[0];
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(wtc_ext, m) {
  m.def(
      "mlp_critic_loss(Tensor p, Tensor q, Tensor alpha, Tensor[] weights, Tensor[] biases, "
      "float w1_weight, float gp_weight, float center, bool compute_grads) -> (Tensor loss, "
      "Tensor w1, Tensor gp, Tensor[] grad_weights, Tensor[] grad_biases, Tensor grad_p, "
      "Tensor grad_q)");
}

TORCH_LIBRARY_IMPL(wtc_ext, CPU, m) { m.impl("mlp_critic_loss", &mlp_critic_loss_cpu); }

namespace {

using MlpCriticLossSignature = CriticLossResult(const at::Tensor&, const at::Tensor&,
                                                const at::Tensor&, at::TensorList, at::TensorList,
                                                double, double, double, bool);

const c10::TypedOperatorHandle<MlpCriticLossSignature>& mlp_critic_loss_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("wtc_ext::mlp_critic_loss", "")
                             .typed<MlpCriticLossSignature>();
  return op;
}

// Autograd in C++: the forward already holds every gradient, so the backward hands them over
// (scaled by the incoming gradient unless that is 1). (A Python autograd registration cost a
// third of the op's time at batch 64 on a CPU.) The gradients are returned as outputs too,
// marked non-differentiable.
class MlpCriticLossFunction : public torch::autograd::Function<MlpCriticLossFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                const at::Tensor& p, const at::Tensor& q,
                                                const at::Tensor& alpha, at::TensorList weights,
                                                at::TensorList biases, double w1_weight,
                                                double gp_weight, double center) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);  // no zero tensors for the outputs nobody differentiates
    auto [loss, w1, gp, grad_w, grad_b, grad_p, grad_q] = mlp_critic_loss_op().call(
        p, q, alpha, weights, biases, w1_weight, gp_weight, center, /*compute_grads=*/true);
    torch::autograd::variable_list out{loss, w1, gp};
    out.insert(out.end(), grad_w.begin(), grad_w.end());
    out.insert(out.end(), grad_b.begin(), grad_b.end());
    out.push_back(grad_p);
    out.push_back(grad_q);
    // The gradients have no history (non-differentiable outputs), so they are kept as plain
    // data: the backward can then hand them over to .grad without a copy.
    ctx->saved_data["grads"] = std::vector<at::Tensor>(out.begin() + 3, out.end());
    ctx->saved_data["layers"] = static_cast<int64_t>(grad_w.size());
    torch::autograd::variable_list fixed(out.begin() + 1, out.end());
    ctx->mark_non_differentiable(fixed);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const int64_t L = ctx->saved_data["layers"].toInt();
    // p, q, alpha, L weights, L biases, three floats
    torch::autograd::variable_list result(3 + 2 * L + 3);
    const at::Tensor& grad_loss = grad_outputs[0];
    if (!grad_loss.defined()) return result;
    auto it = ctx->saved_data.find("grads");
    // Only a backward that frees the graph hands the gradients over, so this cannot fail in a
    // backward that PyTorch itself would allow.
    TORCH_CHECK(it != ctx->saved_data.end(),
                "wtc_ext critic loss: backward ran a second time through a freed graph; pass "
                "retain_graph=True to the first backward");
    std::vector<at::Tensor> scaled = it->second.toTensorVector();
    // loss.backward() seeds 1. On a CPU that is free to check, and when this backward frees the
    // graph the gradients are handed over as they are (AccumulateGrad takes a tensor nobody else
    // holds without copying it); scaling or copying them costs a tenth of the op at batch 64.
    // (Not under tracing: fake and functional tensors have no value to read.)
    const bool plain_cpu =
        grad_loss.device().is_cpu() &&
        !grad_loss.key_set().has_any(c10::DispatchKeySet(
            {c10::DispatchKey::Python, c10::DispatchKey::Functionalize}));
    if (!torch::autograd::get_current_graph_task_keep_graph() && plain_cpu &&
        grad_loss.numel() == 1 && grad_loss.item<double>() == 1.0) {
      ctx->saved_data.erase(it);
    } else {
      scaled = at::_foreach_mul(scaled, grad_loss);
    }
    for (int64_t l = 0; l < 2 * L; ++l) result[3 + l] = std::move(scaled[l]);
    result[0] = std::move(scaled[2 * L]);
    result[1] = std::move(scaled[2 * L + 1]);
    return result;
  }
};

CriticLossResult mlp_critic_loss_autograd(const at::Tensor& p, const at::Tensor& q,
                                          const at::Tensor& alpha, at::TensorList weights,
                                          at::TensorList biases, double w1_weight,
                                          double gp_weight, double center, bool compute_grads) {
  bool needs_grad = p.requires_grad() || q.requires_grad();
  for (const auto& t : weights) needs_grad = needs_grad || t.requires_grad();
  for (const auto& t : biases) needs_grad = needs_grad || t.requires_grad();
  if (!(compute_grads && needs_grad && at::GradMode::is_enabled())) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return mlp_critic_loss_op().call(p, q, alpha, weights, biases, w1_weight, gp_weight, center,
                                     compute_grads);
  }
  const auto out = MlpCriticLossFunction::apply(p, q, alpha, weights, biases, w1_weight,
                                                gp_weight, center);
  const int64_t L = static_cast<int64_t>(weights.size());
  std::vector<at::Tensor> grad_w(out.begin() + 3, out.begin() + 3 + L);
  std::vector<at::Tensor> grad_b(out.begin() + 3 + L, out.begin() + 3 + 2 * L);
  return {out[0], out[1], out[2], grad_w, grad_b, out[3 + 2 * L], out[4 + 2 * L]};
}

}  // namespace

TORCH_LIBRARY_IMPL(wtc_ext, Autograd, m) {
  m.impl("mlp_critic_loss", &mlp_critic_loss_autograd);
}

}  // namespace wtc
