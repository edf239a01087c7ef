// The per-token arithmetic of SAE, written once for every backend.
//
// The contract's recursion carries (next_value, next_adv, next_is_boundary). It folds into
// one scalar, w = next_value + lambda(next_is_boundary) * next_adv (a lambda-return), so
// that each token's update depends on that token alone:
//     R_t = r_t + gamma * w,   A_t = R_t - V_t,
//     w <- V_t + lambda_t * A_t = (gamma * lambda_t) * w + (V_t + lambda_t * (r_t - V_t))
// where lambda_t is lam if token t starts a segment and lam_inner otherwise; w starts at
// the bootstrap value and masked tokens leave it untouched. w is updated in the affine form
// on the right: it is what the CUDA warp scan composes, and its dependency chain from one
// w to the next is one multiply and one add (the left form's is five operations, which
// bounds how fast a single row can go).
//
// The adjoint (gradients of a loss through A and R into r, V and the bootstrap) is the
// same kind of recursion run forward in time, carrying u = dLoss/dw:
//     g = gA_t + gR_t,  dr_t = g + lambda_t * u,  dV_t = (1 - lambda_t) * u - gA_t,
//     u <- gamma * dr_t = (gamma * lambda_t) * u + gamma * g,
// again updated in the affine form; dLoss/dbootstrap = u after the last token.
#pragma once

#include "sae_elem.h"

namespace sae {

// The two halves of a token's step, for kernels that evaluate them apart: the token's map
// of the carried value (s <- a * s + b) and its outputs given the carried value before it.
template <typename acc_t>
SAE_HD void forward_map(acc_t r, acc_t v, acc_t lam_t, acc_t gamma, acc_t& a, acc_t& b) {
  a = gamma * lam_t;
  b = v + lam_t * (r - v);
}

template <typename acc_t>
SAE_HD void forward_outputs(acc_t r, acc_t v, acc_t gamma, acc_t w, acc_t& adv, acc_t& ret) {
  ret = r + gamma * w;
  adv = ret - v;
}

template <typename acc_t>
SAE_HD void adjoint_map(acc_t ga, acc_t gr, acc_t lam_t, acc_t gamma, acc_t& a, acc_t& b) {
  a = gamma * lam_t;
  b = gamma * (ga + gr);
}

template <typename acc_t>
SAE_HD void adjoint_outputs(acc_t ga, acc_t gr, acc_t lam_t, acc_t u, acc_t& dr, acc_t& dv) {
  const acc_t g = ga + gr;
  dr = g + lam_t * u;
  dv = (acc_t(1) - lam_t) * u - ga;
}

// One valid token: outputs from the carried value, then the carried value moves on.
template <typename acc_t>
SAE_HD void forward_token(acc_t r, acc_t v, acc_t lam_t, acc_t gamma, acc_t& w, acc_t& adv,
                          acc_t& ret) {
  acc_t a, b;
  forward_outputs(r, v, gamma, w, adv, ret);
  forward_map(r, v, lam_t, gamma, a, b);
  w = a * w + b;
}

template <typename acc_t>
SAE_HD void adjoint_token(acc_t ga, acc_t gr, acc_t lam_t, acc_t gamma, acc_t& u, acc_t& dr,
                          acc_t& dv) {
  acc_t a, b;
  adjoint_outputs(ga, gr, lam_t, u, dr, dv);
  adjoint_map(ga, gr, lam_t, gamma, a, b);
  u = a * u + b;
}

// Kernels that stage a token's lambda ahead of its step mark a masked token with this
// lambda (a valid token's is in [0, 1]): `is_valid_lambda` is then the token's mask, and
// the step is skipped, leaving the carried value untouched.
template <typename acc_t>
SAE_HD constexpr acc_t masked_token_lambda() {
  return acc_t(-1);
}

template <typename acc_t>
SAE_HD bool is_valid_lambda(acc_t lam_t) {
  return lam_t >= acc_t(0);
}

// The same test on a vector of lambdas (the CPU kernels' vector types; scalar_t their lane
// type): a lane mask.
template <typename scalar_t, typename lanes_t>
SAE_HD auto valid_lambda_lanes(const lanes_t& lam_t) {
  return lam_t >= scalar_t(0);
}

// lambda applied when stepping from token t to its predecessor.
template <typename acc_t>
SAE_HD acc_t token_lambda(bool cut, const Params& p) {
  return cut ? acc_t(p.lam) : acc_t(p.lam_inner);
}

// The same for a row whose lambdas may be its own (ScanArgs' per-row hyperparameters).
template <typename acc_t>
SAE_HD acc_t token_lambda(bool cut, const RowLambdas<acc_t>& l) {
  return cut ? l.lam : l.lam_inner;
}

}  // namespace sae
